"""The frozen-feature baseline (``model=linear_probe``): a frozen pretrained backbone and a linear head on pooled
multi-stage features, fitted once by logistic regression on the labelled target images.

The first thing a practitioner tries, and with ImageNet features already strong: the floor every other method
must clear (docs/results.md). One epoch reads the labelled images (no gradient, no augmentation by
default); the regression is fitted when validation starts, so the best checkpoint holds the fitted head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.base import DefectModule
from madd.models.classifier import ImageClassifier
from madd.models.linear_probe.torch_model import fit_logistic_head


class LinearProbe(DefectModule):
    """Args:
        backbone: a pretrained :class:`~madd.models.backbones.Backbone`; it is frozen (weights and BatchNorm).
        c: inverse L2 strength of the logistic regression (scikit-learn's ``C``) on standardised features.
        class_weights: ``null`` or ``balanced`` (scikit-learn's ``class_weight``).
        augment: preset applied to the labelled images before their features are read; with ``augment`` set,
            ``trainer.max_epochs = n`` reads ``n`` augmented copies of every image.
        head: ``model/head`` (``pool_stages``: which stages' pooled features the regression sees).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        c: float = 1.0,
        class_weights: str | None = None,
        augment: str = "none",
        head: Mapping | None = None,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        optimizer=None,
        scheduler=None,
        pixel_threshold: float = 0.5,
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        if not c > 0:
            raise MaddConfigError(f"model.c={c} must be > 0 (inverse regularisation strength, e.g. 1.0)")
        if class_weights not in (None, "balanced"):
            raise MaddConfigError(f"model.class_weights={class_weights!r}: the linear probe takes null or balanced")
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.net = ImageClassifier(backbone, num_classes, **(head or {}))
        self.net.backbone.requires_grad_(False)
        self.augment = build_augmentation(augment)
        self.c, self.class_weights = c, class_weights
        self._features: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def train_splits(self) -> list[str]:
        return ["target_labeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def configure_optimizers(self):
        return None  # nothing is trained by gradient: the head is fitted in closed form

    def on_train_epoch_start(self) -> None:
        self.net.eval()  # frozen features: BatchNorm and dropout in evaluation mode

    def training_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["target_labeled"]
        with torch.no_grad():
            self._features.append(self.net.features(self.augment(b["image"])).double().cpu())
        self._labels.append(b["label"].cpu())

    def on_validation_start(self) -> None:
        if self._features:
            self.fit_head()

    def fit_head(self) -> None:
        """Fit the regression on the features read so far (all ranks' under DDP) and write it into the head."""
        features, labels = torch.cat(self._features), torch.cat(self._labels)
        if self.trainer.world_size > 1:
            features = self.all_gather(features.to(self.device)).flatten(0, 1).cpu()
            labels = self.all_gather(labels.to(self.device)).flatten(0, 1).cpu()
        fit_logistic_head(self.net.head, features.numpy(), labels.numpy().astype(np.int64), self.num_classes,
                          self.c, self.class_weights)
        self.log("train/probe_images", float(len(labels)))
        self._features, self._labels = [], []
