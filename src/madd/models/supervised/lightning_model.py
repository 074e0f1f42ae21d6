"""Supervised classification baseline (also stage 1 of transfer: source pre-training)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.base import DefectModule
from madd.models.class_weights import ClassWeights
from madd.models.classifier import ImageClassifier
from madd.models.linear_probe.torch_model import probe_init_head


class SupervisedClassifier(DefectModule):
    """Cross-entropy on the labelled images of ``train_split`` (``target_labeled`` or ``source``).

    Args:
        backbone: a :class:`~madd.models.backbones.Backbone` (``model/backbone`` config group).
        train_split: which split of the training batch dict to learn from.
        augment: kornia preset applied to training batches.
        label_smoothing, dropout: the usual regularisers.
        head: ``model/head`` (:class:`~madd.models.classifier.ImageClassifier`'s ``pool_stages``, ``zero_init_head``).
        head_init: ``zero`` (the head as ``model/head`` makes it) or ``probe``: fit the linear probe on the frozen
            features of the labelled images first and fine-tune from there (LP-FT).
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
        head: Mapping | None = None,
        head_init: str = "zero",
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.net = ImageClassifier(backbone, num_classes, dropout, **(head or {}))
        self.augment = build_augmentation(augment)
        self.train_split = train_split
        self.label_smoothing = label_smoothing
        self.ce_weights = ClassWeights(class_weights, num_classes, train_split)
        if head_init not in ("zero", "probe"):
            raise MaddConfigError(f"model.head_init={head_init!r}: choose zero (model.head) or probe (LP-FT)")
        self.head_init = head_init

    def on_fit_start(self) -> None:
        """``head_init=probe``: the head starts from the linear probe of the labelled images (LP-FT); a resumed run
        keeps its checkpoint's head."""
        if self.head_init == "probe" and self.trainer.global_step == 0:
            loader = self.trainer.datamodule.split_loader(self.train_split)
            probe_init_head(self.net, loader, self.num_classes, class_weight="balanced")

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
        loss = F.cross_entropy(logits, b["label"], weight=self.ce_weights.weight, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == b["label"]).float().mean()
        self.log_dict({"train/loss": loss, "train/accuracy": acc}, prog_bar=True, batch_size=len(images))
        return loss
