"""Boxes from anomaly maps and box-level AP@0.5 (torchmetrics ``MeanAveragePrecision``).

A box is the bounding box of an 8-connected component of the anomaly map thresholded at ``threshold``
(:func:`madd.data.dataset.boxes_from_mask`, the same rule that derives ground-truth boxes from masks); its
score is the map's maximum inside the box times the image's defect probability, its class the image's
predicted class. Images predicted normal get no box (the detector says "no defect").

The COCO evaluation behind ``MeanAveragePrecision`` comes from ``faster-coco-eval`` (a madd dependency) or,
when only that is installed, ``pycocotools``; torchmetrics' own default is pycocotools, which madd does not need.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from madd.data.dataset import boxes_from_mask
from madd.utils.optional import first_installed

# torchmetrics' backend names are the modules' names
COCO_BACKENDS = ("faster_coco_eval", "pycocotools")


def boxes_from_anomaly_map(amap: torch.Tensor, threshold: float, pred: torch.Tensor, defect_prob: torch.Tensor,
                           normal_index: int | None) -> list[dict[str, torch.Tensor]]:
    """Per image ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,)}`` from ``amap`` ``(B, 1, H, W)``."""
    out = []
    maps = amap[:, 0].detach().float().cpu()
    for m, c, p in zip(maps, pred.cpu().tolist(), defect_prob.detach().float().cpu().tolist()):
        rows = torch.zeros(0, 5)
        if normal_index is None or c != normal_index:
            rows = torch.from_numpy(boxes_from_mask((m >= threshold).numpy(), c))
        boxes = rows[:, 1:]
        scores = torch.stack([m[int(y1):int(y2), int(x1):int(x2)].max() for x1, y1, x2, y2 in boxes.tolist()]) \
            if len(boxes) else torch.zeros(0)
        out.append({"boxes": boxes, "scores": scores * p, "labels": rows[:, 0].long()})
    return out


def target_boxes(boxes: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The batch's ``(n, 5)`` ``(class, x1, y1, x2, y2)`` ground truth in torchmetrics' format."""
    return [{"boxes": b[:, 1:].float().cpu(), "labels": b[:, 0].long().cpu()} for b in boxes]


class BoxAP(nn.Module):
    """Class-aware box AP at IoU 0.5, averaged over classes (COCO-style 101-point interpolation)."""

    def __init__(self) -> None:
        super().__init__()
        backend = first_installed(COCO_BACKENDS, "faster-coco-eval", "box AP@0.5 (test/box_mAP50, torchmetrics' "
                                  "MeanAveragePrecision)")
        self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], backend=backend)
        self.num_targets = 0

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        self.metric.update(preds, targets)
        self.num_targets += sum(len(t["boxes"]) for t in targets)

    def compute(self) -> dict[str, float]:
        if self.num_targets == 0:  # AP is undefined without a ground-truth box
            return {}
        return {"box_mAP50": float(self.metric.compute()["map_50"])}

    def reset(self) -> None:
        self.metric.reset()
        self.num_targets = 0
