"""Pixel-level metrics from anomaly maps or predicted masks.

Per-image F1 and IoU use this rule for empty masks (documented in docs/concepts.md, section "Metrics"):

* ground truth empty and prediction empty: F1 = IoU = 1 (a correct "no defect");
* exactly one of them empty: F1 = IoU = 0;
* otherwise the usual ``2TP / (2TP + FP + FN)`` and ``TP / (TP + FP + FN)``.

Without this rule a defect-free image would always score 0 (see NOTES.md, "Traps").
Pixel AUROC uses torchmetrics' binned ``BinaryAUROC`` (fixed thresholds keep memory constant on
large test sets): ``auroc_bins`` thresholds evenly spaced on [0, 1] plus one above 1 (the ROC's origin).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torchmetrics.aggregation import CatMetric, SumMetric
from torchmetrics.classification import BinaryAUROC


def per_image_f1_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F1 and IoU per image for boolean masks of shape ``(B, ...)`` with the empty-mask rule above."""
    p = pred.flatten(1).bool()
    t = target.flatten(1).bool()
    tp = (p & t).sum(1).float()
    fp = (p & ~t).sum(1).float()
    fn = (~p & t).sum(1).float()
    both_empty = (p.sum(1) == 0) & (t.sum(1) == 0)
    denom_f1 = 2 * tp + fp + fn
    denom_iou = tp + fp + fn
    f1 = torch.where(both_empty, torch.ones_like(tp), 2 * tp / denom_f1.clamp_min(1))
    iou = torch.where(both_empty, torch.ones_like(tp), tp / denom_iou.clamp_min(1))
    return f1, iou


@contextmanager
def _native_bincount_on_cpu(device: torch.device):
    """torchmetrics swaps ``torch.bincount`` for a (pixels x 4 bins) comparison matrix whenever deterministic
    algorithms are on: tens of GB for one batch of maps. ``torch.bincount`` is deterministic on CPU, so there
    the flag is lifted for the update (``trainer.deterministic=true`` runs stay bit-exact)."""
    if device.type != "cpu" or not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)


class PixelMetrics(nn.Module):
    """Pixel AUROC of a score map plus per-image F1/IoU of the map thresholded at ``threshold``."""

    def __init__(self, threshold: float = 0.5, auroc_bins: int = 200) -> None:
        super().__init__()
        self.threshold = threshold
        # one extra threshold above 1 puts the ROC's (0, 0) corner on the binned curve: without it torchmetrics'
        # curve starts at the threshold 1.0, and saturated scores (== 1) lose the first trapezoid of the area
        thresholds = torch.cat([torch.linspace(0, 1, auroc_bins), torch.tensor([2.0])])
        self.auroc = BinaryAUROC(thresholds=thresholds)
        self.f1 = CatMetric()
        self.iou = CatMetric()
        # a metric state (not a Python flag) so every DDP rank agrees whether AUROC is defined
        self.positives = SumMetric()

    def update(self, scores: torch.Tensor, masks: torch.Tensor) -> None:
        """``scores`` in [0, 1] and ``masks`` in {0, 1}, both ``(B, 1, H, W)``."""
        scores = scores.clamp(0, 1)
        with _native_bincount_on_cpu(scores.device):
            self.auroc.update(scores.flatten(), masks.flatten().long())
        self.positives.update((masks > 0.5).sum().float())
        f1, iou = per_image_f1_iou(scores >= self.threshold, masks > 0.5)
        self.f1.update(f1)
        self.iou.update(iou)

    def compute(self) -> dict[str, float]:
        f1 = self.f1.compute()
        iou = self.iou.compute()
        out = {
            "pixel_f1": float(f1.mean()),
            "pixel_f1_std": float(f1.std()) if f1.numel() > 1 else 0.0,
            "pixel_iou": float(iou.mean()),
            "pixel_iou_std": float(iou.std()) if iou.numel() > 1 else 0.0,
        }
        if float(self.positives.compute()) > 0:  # AUROC is undefined without defect pixels
            out["pixel_auroc"] = float(self.auroc.compute())
        return out

    def reset(self) -> None:
        self.auroc.reset()
        self.f1.reset()
        self.iou.reset()
        self.positives.reset()
