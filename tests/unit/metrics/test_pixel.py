"""Pixel-level defect metrics (madd.metrics.pixel) against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from madd.metrics import PixelMetrics, per_image_f1_iou

# ----------------------------------------------------------------------------------------- pixel level


def _mask(*pixels: tuple[int, int], size: int = 4) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.bool)
    for y, x in pixels:
        m[0, y, x] = True
    return m


def test_per_image_f1_iou_overlap_by_hand():
    pred = _mask((0, 0), (0, 1), (1, 0), (1, 1))
    gt = _mask((0, 1), (1, 1), (0, 2), (1, 2))
    f1, iou = per_image_f1_iou(pred[None], gt[None])
    # TP = 2, FP = 2, FN = 2: F1 = 4 / (4 + 2 + 2) = 0.5, IoU = 2 / 6
    assert f1.item() == pytest.approx(0.5) and iou.item() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ((), (), 1.0),  # both empty: a correct "no defect" scores 1
        (((0, 0),), (), 0.0),  # false positive on a defect-free image
        ((), ((0, 0),), 0.0),  # missed defect
        (((0, 0),), ((0, 0),), 1.0),  # perfect
    ],
    ids=["both-empty", "pred-only", "gt-only", "perfect"],
)
def test_per_image_empty_mask_rule(pred, gt, expected):
    f1, iou = per_image_f1_iou(_mask(*pred)[None], _mask(*gt)[None])
    assert f1.item() == expected and iou.item() == expected


def test_pixel_metrics_mean_f1_iou_and_auroc_match_sklearn():
    g = torch.Generator().manual_seed(0)
    thresholds = torch.linspace(0, 1, 200)
    # scores on the binned AUROC's threshold grid, so the binned curve equals the exact one
    scores = thresholds[torch.randint(0, 200, (3, 1, 8, 8), generator=g)]
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, 2:5, 2:5] = 1
    masks[1, 0, 6:, :] = 1
    scores = (scores + 0.3 * masks).clamp(0, 1)  # informative but imperfect
    scores = thresholds[(scores * 199).round().long()]
    pm = PixelMetrics(threshold=0.5)
    pm.update(scores[:2], masks[:2])
    pm.update(scores[2:], masks[2:])
    out = pm.compute()
    expected_auroc = roc_auc_score(masks.flatten().numpy(), scores.flatten().numpy())
    assert out["pixel_auroc"] == pytest.approx(expected_auroc, abs=1e-5)
    f1, iou = per_image_f1_iou(scores >= 0.5, masks > 0.5)
    assert out["pixel_f1"] == pytest.approx(f1.mean().item())
    assert out["pixel_iou"] == pytest.approx(iou.mean().item())
    assert out["pixel_f1_std"] == pytest.approx(f1.std().item())


def test_pixel_auroc_absent_without_defect_pixels_and_reset():
    pm = PixelMetrics()
    pm.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    out = pm.compute()
    assert "pixel_auroc" not in out  # undefined without a positive pixel
    assert out["pixel_f1"] == 1.0 and out["pixel_iou"] == 1.0  # both empty everywhere: correct
    pm.reset()
    pm.update(torch.tensor([[[[0.9, 0.1]]]]), torch.tensor([[[[1.0, 0.0]]]]))
    assert math.isclose(pm.compute()["pixel_auroc"], 1.0)
