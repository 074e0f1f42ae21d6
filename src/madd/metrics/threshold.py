"""The decision threshold of a score (image anomaly score, anomaly-map pixel), set on validation images.

One rule for every method that scores instead of classifying (PatchCore, PaDiM, and MADD's anomaly map):

* ``mode="far"`` (default): the smallest threshold whose false-alarm rate on the **normal** validation scores is
  at most ``target_far``, with "defective" meaning ``score > threshold``. That is the empirical
  ``(1 - target_far)`` quantile of the normal scores by the inverted-CDF definition (``numpy.quantile(...,
  method="inverted_cdf")``): at most ``floor(target_far * n)`` of the ``n`` normal scores lie above it, and no
  lower threshold keeps that promise, so it is also the threshold of the largest detection rate at that FAR.
  It needs no defect images, so it works on the validation split of a normal-only line.
* ``mode="f1"``: the threshold of the best F1 over the validation scores (torchmetrics' precision-recall curve,
  as anomalib's ``F1AdaptiveThreshold``). When the validation split has no defect images it falls back to the
  ``far`` rule and says so.

Anomaly maps (:func:`map_threshold`): ``far`` thresholds the per-image map maxima of the normal validation images,
so at most ``target_far`` of them show any pixel above it (an empty map is what a good image should get); ``f1``
takes the best-F1 pixel threshold over the validation masks, and the ``far`` rule when there are no defect pixels.

What it never does is anomalib's trap (#2433): with no defect images, F1 is undefined for every threshold and
an arg-max over it returns the **minimum** score, which calls every image defective.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import binary_precision_recall_curve

from madd.errors import MaddConfigError

log = logging.getLogger(__name__)
MODES = ("far", "f1")


@dataclass(frozen=True)
class Threshold:
    """``value`` and how it was set (``rule``: ``far`` or ``f1``, after any fallback)."""

    value: float
    rule: str


def far_threshold(normal_scores: torch.Tensor, target_far: float) -> float:
    """The ``(1 - target_far)`` inverted-CDF quantile of ``normal_scores`` (see the module docstring)."""
    if not 0.0 <= target_far < 1.0:
        raise MaddConfigError(f"model.threshold.target_far={target_far} must be in [0, 1)")
    scores = normal_scores.detach().double().flatten().cpu().numpy()
    if scores.size == 0:
        raise MaddConfigError("the validation split has no normal images to set the threshold on; "
                              "raise data.splits.val or check data.normal_class")
    return float(np.quantile(scores, 1.0 - target_far, method="inverted_cdf"))


def f1_threshold(scores: torch.Tensor, is_defect: torch.Tensor) -> float:
    """The score threshold of the best F1 (``defective = score >= threshold`` on torchmetrics' curve)."""
    precision, recall, thresholds = binary_precision_recall_curve(scores.flatten().float(), is_defect.flatten().long())
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    # the curve's last point (precision 1, recall 0) has no threshold
    return float(thresholds[int(f1[:-1].argmax())]) if thresholds.numel() else float(scores.max())


def calibrate_threshold(scores: torch.Tensor, is_defect: torch.Tensor, target_far: float = 0.05,
                        mode: str = "far") -> Threshold:
    """The threshold for ``scores`` of validation items labelled ``is_defect`` under ``mode`` (see above)."""
    if mode not in MODES:
        raise MaddConfigError(f"model.threshold.mode={mode!r} is unknown; choose from {list(MODES)}")
    is_defect = is_defect.flatten().bool()
    scores = scores.flatten()
    if mode == "f1":
        if is_defect.any() and (~is_defect).any():
            # f1_threshold's threshold is inclusive (>=), the decision here exclusive (>): step one float32 below it
            value = np.float32(f1_threshold(scores, is_defect))
            return Threshold(float(np.nextafter(value, np.float32(-np.inf))), "f1")
        log.warning("threshold mode f1: the validation split has no defect images; using the far rule "
                    "(the (1 - %.3g) quantile of the normal scores) instead of the minimum score", target_far)
    return Threshold(far_threshold(scores[~is_defect], target_far), "far")


def map_threshold(maps: torch.Tensor, is_defect: torch.Tensor, has_mask: torch.Tensor, masks: torch.Tensor,
                  target_far: float = 0.05, mode: str = "far") -> Threshold:
    """The pixel threshold of validation ``maps (N, 1, H, W)`` with image labels ``is_defect (N,)`` and the
    ground-truth ``masks`` of the images where ``has_mask`` (see the module docstring)."""
    has_mask = has_mask.bool()
    if mode == "f1" and bool((masks[has_mask] > 0.5).any()):
        return calibrate_threshold(maps[has_mask], masks[has_mask] > 0.5, target_far, mode)
    return calibrate_threshold(maps.flatten(1).amax(1), is_defect, target_far, "far")
