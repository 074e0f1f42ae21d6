"""Class weights of the cross-entropy terms: ``model.class_weights`` of every classifier (supervised, FixMatch, Mean
Teacher, MADD and its TIM stages), one rule.

The 50-label AWDD budget is about 30 ``good`` and 5 images per defect type; unweighted, a network trained from
scratch learns to answer ``good`` (docs/methods/supervised.md, section "Baseline quality"). ``balanced`` gives class
``c`` the weight ``n / (k · count_c)`` over the labelled images of a split (scikit-learn's ``compute_class_weight``);
classes without labels keep 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from madd.errors import MaddConfigError


def check_class_weights(spec, num_classes: int):
    """``None``, ``"balanced"`` or a list of ``num_classes`` non-negative numbers; anything else is an error."""
    if spec is None or spec == "balanced":
        return spec
    if isinstance(spec, str):
        raise MaddConfigError(f"model.class_weights={spec!r}: use null, balanced or a list of floats")
    weights = [float(w) for w in spec]
    if len(weights) != num_classes or min(weights) < 0:
        raise MaddConfigError(f"model.class_weights needs {num_classes} non-negative numbers, got {weights}")
    return weights


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``n / (k · count_c)`` for the classes present in ``labels``; 1 for the others."""
    labels = np.asarray(labels)
    weights = np.ones(num_classes, dtype=np.float32)
    present = np.unique(labels)
    if len(present):
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.from_numpy(weights)


def split_class_weights(spec, trainer, split: str, num_classes: int) -> torch.Tensor:
    """The weights ``spec`` gives for the labelled images of ``split`` of the trainer's data module."""
    if spec is None:
        return torch.ones(num_classes)
    if spec != "balanced":
        return torch.tensor(spec, dtype=torch.float32)
    records = getattr(getattr(trainer, "datamodule", None), "records", None)
    if not records or split not in records:
        raise MaddConfigError("model.class_weights=balanced counts the labels of the training splits and needs a "
                              "madd DefectDataModule; set model.class_weights=null or give explicit weights")
    return balanced_class_weights([r.label for r in records[split]], num_classes)


class ClassWeights(nn.Module):
    """The cross-entropy class weights of one labelled split, for any module with a ``model.class_weights`` option.

    ``weight`` is a non-persistent buffer (checkpoints keep their keys; it moves with the module's device): an
    explicit list from the start, ``"balanced"`` counted from ``split`` of the trainer's data module by
    :meth:`fit`, which ``DefectModule.setup("fit")`` calls for every such submodule, all ones for ``None``.
    """

    def __init__(self, spec, num_classes: int, split: str = "target_labeled") -> None:
        super().__init__()
        self.spec, self.num_classes, self.split = check_class_weights(spec, num_classes), num_classes, split
        initial = torch.tensor(self.spec, dtype=torch.float32) if isinstance(self.spec, list) else torch.ones(num_classes)
        self.register_buffer("weight", initial, persistent=False)

    def fit(self, trainer) -> None:
        if self.spec is not None:
            self.weight.copy_(split_class_weights(self.spec, trainer, self.split, self.num_classes))
