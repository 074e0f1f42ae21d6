"""Image-level defect metrics on torchmetrics.

* ``mAP``: mean over classes of one-vs-rest average precision (``MulticlassAveragePrecision``, macro).
* ``accuracy``, ``f1`` (macro), ``auroc`` (macro one-vs-rest), and the confusion matrix.
* ``DR`` (detection rate): share of defective images (true class != normal) predicted defective
  (predicted class != normal) = binary recall of "defective".
* ``FAR`` (false alarm rate): share of normal images predicted defective = 1 - binary specificity.

DR and FAR exist only when the dataset has a normal class (``normal_index`` not ``None``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)


class DefectMetrics(nn.Module):
    """Accumulates class probabilities and targets; ``compute()`` returns a flat dict of floats."""

    def __init__(self, num_classes: int, normal_index: int | None = None) -> None:
        super().__init__()
        self.normal_index = normal_index
        self.multiclass = MetricCollection(
            {
                "mAP": MulticlassAveragePrecision(num_classes, average="macro"),
                "accuracy": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
                "auroc": MulticlassAUROC(num_classes, average="macro"),
            }
        )
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.detection = (
            MetricCollection({"DR": BinaryRecall(), "specificity": BinarySpecificity()})
            if normal_index is not None
            else None
        )

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.multiclass.update(probs, target)
        self.confusion.update(probs, target)
        if self.detection is not None:
            pred_defect = (probs.argmax(1) != self.normal_index).long()
            self.detection.update(pred_defect, (target != self.normal_index).long())

    def compute(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.multiclass.compute().items()}
        if self.detection is not None:
            d = self.detection.compute()
            out["DR"] = float(d["DR"])
            out["FAR"] = 1.0 - float(d["specificity"])
        return out

    def confusion_matrix(self) -> torch.Tensor:
        return self.confusion.compute()

    def reset(self) -> None:
        self.multiclass.reset()
        self.confusion.reset()
        if self.detection is not None:
            self.detection.reset()
