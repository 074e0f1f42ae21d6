"""Supervised classification baseline (also stage 1 of transfer: source pre-training)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.base import DefectModule
from madd.models.classifier import ImageClassifier


class SupervisedClassifier(DefectModule):
    """Cross-entropy on the labelled images of ``train_split`` (``target_labeled`` or ``source``).

    Args:
        backbone: a :class:`~madd.models.backbones.Backbone` (``model/backbone`` config group).
        train_split: which split of the training batch dict to learn from.
        augment: kornia preset applied to training batches.
        label_smoothing, dropout: the usual regularisers.
        class_weights: per-class weights of the cross-entropy: ``None`` (all 1), ``"balanced"`` (scikit-learn's
            ``n_samples / (n_classes * count_c)`` over the labelled images of ``train_split``, computed when
            fitting starts; a normal-dominant label budget otherwise teaches the model to answer "good"), or an
            explicit list of ``num_classes`` floats.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        train_split: str = "target_labeled",
        augment: str = "standard",
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        optimizer=None,
        scheduler=None,
        pixel_threshold: float = 0.5,
        class_weights: str | Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        if class_weights is not None and not isinstance(class_weights, str):
            class_weights = [float(w) for w in class_weights]
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.net = ImageClassifier(backbone, num_classes, dropout)
        self.augment = build_augmentation(augment)
        self.train_split = train_split
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        # not persistent: recomputed from the data at fit start, so checkpoints keep their usual keys
        self.register_buffer("loss_weight", torch.ones(num_classes), persistent=False)
        if isinstance(class_weights, list):
            if len(class_weights) != num_classes or min(class_weights) < 0:
                raise MaddConfigError(
                    f"model.class_weights needs {num_classes} non-negative numbers (one per class), got {class_weights}"
                )
            self.loss_weight = torch.tensor(class_weights)
        elif class_weights not in (None, "balanced"):
            raise MaddConfigError(f"model.class_weights={class_weights!r}: use null, balanced or a list of floats")

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.class_weights == "balanced":
            self.loss_weight = self.balanced_weights().to(self.loss_weight.device)

    def balanced_weights(self) -> torch.Tensor:
        """``n / (k * count_c)`` over the labelled training images (classes without labels keep weight 1)."""
        records = getattr(self.trainer.datamodule, "records", None) if self._trainer is not None else None
        if not records or self.train_split not in records:
            raise MaddConfigError(
                "model.class_weights=balanced counts the labels of the training split and needs a "
                "madd DefectDataModule; set model.class_weights=null or give explicit weights"
            )
        labels = np.array([r.label for r in records[self.train_split]])
        present = np.unique(labels)
        weights = np.ones(self.num_classes, dtype=np.float32)
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return torch.from_numpy(weights)

    def train_splits(self) -> list[str]:
        """The one split it learns from (``source`` for source pre-training): the data module loads just that."""
        return [self.train_split]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        b = batch[self.train_split]
        with torch.no_grad():
            images = self.augment(b["image"])
        logits = self(images)
        loss = F.cross_entropy(logits, b["label"], weight=self.loss_weight, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == b["label"]).float().mean()
        self.log_dict({"train/loss": loss, "train/accuracy": acc}, prog_bar=True, batch_size=len(images))
        return loss
