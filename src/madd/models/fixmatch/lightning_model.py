"""FixMatch baseline (Sohn et al. 2020): confidence-thresholded pseudo-labels from a weak view train the
strong view of the same unlabelled target image; cross-entropy on the labelled target images.

Same data, backbone, classifier and label budget as the supervised baseline and MADD (the
``target_labeled``/``target_unlabeled`` splits of :class:`~madd.data.datamodule.DefectDataModule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.base import DefectModule
from madd.models.class_weights import ClassWeights
from madd.models.classifier import ImageClassifier
from madd.models.fixmatch.loss import FixMatchLoss


class FixMatch(DefectModule):
    """Args:
        backbone: a :class:`~madd.models.backbones.Backbone` (``model/backbone`` config group).
        threshold: confidence ``tau`` above which a weak-view prediction becomes a pseudo-label (0.95).
        lambda_u: weight of the unlabelled term (1.0).
        weak_augment, strong_augment: :func:`~madd.data.augment.build_augmentation` presets of the two views.
        dropout: dropout before the linear head.
        head: ``model/head`` (:class:`~madd.models.classifier.ImageClassifier`'s ``pool_stages``, ``zero_init_head``).
        class_weights: ``model.class_weights`` (null, balanced or one number per class) of both cross-entropies.

    Logs ``train/loss``, ``train/loss_sup``, ``train/loss_unsup``, ``train/mask_rate`` (share of unlabelled
    images whose pseudo-label was accepted) and ``train/pseudo_precision`` (share of accepted pseudo-labels
    that match the hidden labels of ``target_unlabeled``; an epoch value weighted by the number accepted,
    absent while nothing is accepted). The hidden labels feed that diagnostic only, never the loss.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        weak_augment: str = "weak",
        strong_augment: str = "strong",
        dropout: float = 0.0,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        optimizer=None,
        scheduler=None,
        pixel_threshold: float = 0.5,
        class_weights: str | Sequence[float] | None = None,
        head: Mapping | None = None,
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        if not 0.0 <= threshold <= 1.0:
            raise MaddConfigError(f"model.threshold={threshold} must be in [0, 1] (the paper uses 0.95)")
        if not lambda_u >= 0:
            raise MaddConfigError(f"model.lambda_u={lambda_u} must be >= 0 (the paper uses 1.0)")
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.net = ImageClassifier(backbone, num_classes, dropout, **(head or {}))
        self.weak = build_augmentation(weak_augment)
        self.strong = build_augmentation(strong_augment)
        self.criterion = FixMatchLoss(threshold, lambda_u)
        self.ce_weights = ClassWeights(class_weights, num_classes)

    def train_splits(self) -> list[str]:
        return ["target_labeled", "target_unlabeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, labels = batch["target_labeled"]["image"], batch["target_labeled"]["label"]
        u = batch["target_unlabeled"]["image"]
        with torch.no_grad():
            views = torch.cat([self.weak(x), self.weak(u), self.strong(u)])
        # one forward over labelled + both unlabelled views: BatchNorm sees the whole step, as in the official code
        logits = self(views)
        logits_x, logits_u_weak, logits_u_strong = logits.split([len(x), len(u), len(u)])
        out = self.criterion(logits_x, labels, logits_u_weak, logits_u_strong, self.ce_weights.weight)
        self.log_dict(
            {"train/loss": out.loss, "train/loss_sup": out.loss_sup, "train/loss_unsup": out.loss_unsup},
            prog_bar=True, batch_size=len(x),
        )
        self.log("train/mask_rate", out.mask.mean(), batch_size=len(u))
        self._log_pseudo_precision(out.mask.bool(), out.pseudo_labels, batch["target_unlabeled"]["label"])
        return out.loss

    def _log_pseudo_precision(self, accepted: torch.Tensor, pseudo: torch.Tensor, hidden: torch.Tensor) -> None:
        """Diagnostic only: the hidden labels of ``target_unlabeled`` are compared, never trained on."""
        n = int(accepted.sum())
        if n:
            precision = (pseudo[accepted] == hidden[accepted]).float().mean()
            # epoch value = accepted-weighted mean over the epoch's steps (a step's few acceptances are noise)
            self.log("train/pseudo_precision", precision, batch_size=n, on_step=False, on_epoch=True)
