"""Pixel-level metrics from anomaly maps or predicted masks.

Per-image F1 and IoU use this rule for empty masks (documented in the README):

* ground truth empty and prediction empty: F1 = IoU = 1 (a correct "no defect");
* exactly one of them empty: F1 = IoU = 0;
* otherwise the usual ``2TP / (2TP + FP + FN)`` and ``TP / (TP + FP + FN)``.

Without this rule a defect-free image would always score 0 (see NOTES.md, "Traps").
Pixel AUROC uses torchmetrics' binned ``BinaryAUROC`` (fixed thresholds keep memory constant on
large test sets).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import CatMetric
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


class PixelMetrics(nn.Module):
    """Pixel AUROC of a score map plus per-image F1/IoU of the map thresholded at ``threshold``."""

    def __init__(self, threshold: float = 0.5, auroc_bins: int = 200) -> None:
        super().__init__()
        self.threshold = threshold
        self.auroc = BinaryAUROC(thresholds=auroc_bins)
        self.f1 = CatMetric()
        self.iou = CatMetric()
        self._seen_positive = False

    def update(self, scores: torch.Tensor, masks: torch.Tensor) -> None:
        """``scores`` in [0, 1] and ``masks`` in {0, 1}, both ``(B, 1, H, W)``."""
        scores = scores.clamp(0, 1)
        self.auroc.update(scores.flatten(), masks.flatten().long())
        self._seen_positive |= bool(masks.any())
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
        if self._seen_positive:  # AUROC is undefined without defect pixels
            out["pixel_auroc"] = float(self.auroc.compute())
        return out

    def reset(self) -> None:
        self.auroc.reset()
        self.f1.reset()
        self.iou.reset()
        self._seen_positive = False
