"""From raw anomaly scores to the module contract (class logits, maps in [0, 1]) with thresholds set on validation.

A normal-only detector outputs an unbounded image score and an unbounded per-pixel map. ``ScoreCalibration``
holds what the validation images taught (buffers, so checkpoints and exported graphs carry them):

* the image threshold ``t`` (:func:`madd.metrics.threshold.calibrate_threshold`) and a scale ``s`` (the spread
  of the validation scores); the logit of "defective" is ``z = (score - t) / s``. The class logits put 0 on the
  normal class and ``z`` on every defect class, so ``argmax != normal`` exactly when ``score > t`` and
  ``1 - p(normal)`` is monotone in the score (threshold-free metrics are unchanged). On a multi-class dataset a
  normal-only detector cannot tell defect types apart: every defect class gets the same logit.
* the pixel threshold and scale; the map becomes ``sigmoid((map - t_pix) / s_pix)``, so the model's
  ``pixel_threshold`` 0.5 is the calibrated pixel threshold (sigmoid keeps the pixels' order).

The pixel rule is :func:`madd.metrics.threshold.map_threshold`.
"""

from __future__ import annotations

import torch
from torch import nn

from madd.metrics.threshold import Threshold, calibrate_threshold, map_threshold


def _spread(values: torch.Tensor) -> float:
    spread = float(values.max() - values.min()) if values.numel() else 0.0
    return spread if spread > 0 else 1.0


class ScoreCalibration(nn.Module):
    def __init__(self, num_classes: int, normal_index: int) -> None:
        super().__init__()
        self.num_classes, self.normal_index = num_classes, normal_index
        for name in ("image_threshold", "image_scale", "pixel_threshold", "pixel_scale"):
            self.register_buffer(name, torch.tensor(float("nan")))
        defect_classes = torch.ones(1, num_classes)
        defect_classes[0, normal_index] = 0.0
        self.register_buffer("defect_classes", defect_classes, persistent=False)

    @property
    def calibrated(self) -> bool:
        return not bool(torch.isnan(self.image_threshold))

    @torch.no_grad()
    def fit(self, scores: torch.Tensor, maps: torch.Tensor, is_defect: torch.Tensor, has_mask: torch.Tensor,
            masks: torch.Tensor, target_far: float, mode: str) -> tuple[Threshold, Threshold]:
        """Set both thresholds from validation ``scores (N,)``, ``maps (N, 1, H, W)``, ``is_defect (N,)`` and the
        ground-truth ``masks (N, 1, H, W)`` of the images where ``has_mask``; returns the two choices."""
        image = calibrate_threshold(scores, is_defect, target_far, mode)
        pixel = map_threshold(maps, is_defect, has_mask, masks, target_far, mode)
        self.image_threshold.fill_(image.value)
        self.image_scale.fill_(_spread(scores))
        self.pixel_threshold.fill_(pixel.value)
        self.pixel_scale.fill_(_spread(maps))
        return image, pixel

    def logits(self, scores: torch.Tensor) -> torch.Tensor:
        """``(B,)`` raw scores -> ``(B, num_classes)`` logits (0 for normal, ``(score - t) / s`` for each defect)."""
        z = ((scores - self.image_threshold) / self.image_scale).unsqueeze(1)
        # score == threshold is normal whatever the class order (arg-max ties go to the lowest index)
        z = torch.where(z > 0, z, z.clamp(max=-1e-12))
        return z * self.defect_classes

    def normalize_map(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((maps - self.pixel_threshold) / self.pixel_scale)
