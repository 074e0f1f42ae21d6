"""Image-level defect metrics on torchmetrics.

* ``mAP``: mean over classes of one-vs-rest average precision (``MulticlassAveragePrecision``, macro).
* ``accuracy``, ``f1`` (macro), ``auroc`` (macro one-vs-rest), and the confusion matrix.
* ``DR`` (detection rate): share of defective images (true class != normal) predicted defective
  (predicted class != normal) = binary recall of "defective".
* ``FAR`` (false alarm rate): share of normal images predicted defective = 1 - binary specificity.

* ``image_auroc``: binary AUROC of "defective" against "normal" with the defect score ``1 - p(normal)`` (threshold
  free, comparable between classifiers and normal-only anomaly detectors; ``auroc`` above is the multi-class one).
* ``DR_at_FAR``: the detection rate at the best threshold on this split's ROC whose false-alarm rate is at most
  ``target_far`` (default 5 %): the ROC read at a fixed FAR, as detector comparisons quote it. ``DR``/``FAR`` are
  instead at the model's own decision (arg-max class).

DR, FAR, image_auroc and DR_at_FAR exist only when the dataset has a normal class (``normal_index`` not ``None``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryRecall,
    BinaryROC,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)


def dr_at_far(fpr: torch.Tensor, tpr: torch.Tensor, target_far: float) -> float:
    """The largest true-positive rate among ROC points whose false-positive rate is at most ``target_far``."""
    ok = fpr <= target_far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


class DefectMetrics(nn.Module):
    """Accumulates class probabilities and targets; ``compute()`` returns a flat dict of floats."""

    def __init__(self, num_classes: int, normal_index: int | None = None, target_far: float = 0.05) -> None:
        super().__init__()
        self.normal_index = normal_index
        self.target_far = target_far
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
        # exact (unbinned) curves: image counts are small
        self.defect_roc = BinaryROC() if normal_index is not None else None
        self.defect_auroc = BinaryAUROC() if normal_index is not None else None

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.multiclass.update(probs, target)
        self.confusion.update(probs, target)
        if self.detection is not None:
            pred_defect = (probs.argmax(1) != self.normal_index).long()
            is_defect = (target != self.normal_index).long()
            self.detection.update(pred_defect, is_defect)
            defect_score = 1.0 - probs[:, self.normal_index]
            self.defect_roc.update(defect_score, is_defect)
            self.defect_auroc.update(defect_score, is_defect)

    def compute(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.multiclass.compute().items()}
        if self.detection is not None:
            d = self.detection.compute()
            out["DR"] = float(d["DR"])
            out["FAR"] = 1.0 - float(d["specificity"])
            out["image_auroc"] = float(self.defect_auroc.compute())
            out["DR_at_FAR"] = dr_at_far(*self.defect_roc.compute()[:2], self.target_far)
        return out

    def confusion_matrix(self) -> torch.Tensor:
        return self.confusion.compute()

    def reset(self) -> None:
        self.multiclass.reset()
        self.confusion.reset()
        if self.detection is not None:
            self.detection.reset()
            self.defect_roc.reset()
            self.defect_auroc.reset()
