"""Mean Teacher baseline (Tarvainen & Valpola 2017): a student trained on the labelled target images plus a
consistency term towards an exponential-moving-average teacher on all target images of the step.

The **teacher** is what gets evaluated, tested, predicted and exported (``forward`` runs it): the paper
reports the EMA model as the better one. The student is ``self.student``; the teacher ``self.teacher`` is a
submodule without gradients, so it is in every checkpoint and resumes exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.base import DefectModule
from madd.models.class_weights import ClassWeights
from madd.models.classifier import ImageClassifier
from madd.models.ema import copy_weights, ema_update, warmup_decay
from madd.models.mean_teacher.loss import MeanTeacherLoss


class MeanTeacher(DefectModule):
    """Args:
        backbone: a :class:`~madd.models.backbones.Backbone` (``model/backbone`` config group).
        ema_decay: teacher EMA decay ``alpha`` (0.99); during the first steps the official code's warm-up
            ``min(1 - 1 / (step + 1), alpha)`` is used, so the teacher starts as a true average.
        consistency_weight: ``w_max``, the weight of the softmax-MSE consistency after the ramp-up.
        rampup_epochs: length of the sigmoid ramp-up ``exp(-5 (1 - T)^2)`` in (fractional) epochs.
        augment: :func:`~madd.data.augment.build_augmentation` preset; student and teacher get independent draws.
        dropout: dropout before the linear head (noise for both networks, as in the paper).
        head: ``model/head`` (:class:`~madd.models.classifier.ImageClassifier`'s ``pool_stages``, ``zero_init_head``).
        class_weights: ``model.class_weights`` (null, balanced or one number per class) of the cross-entropy.

    Logs ``train/loss``, ``train/loss_sup``, ``train/loss_cons`` (unweighted), ``train/cons_weight``,
    ``train/ema_decay`` and ``train/teacher_agreement`` (share of images where student and teacher agree).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        ema_decay: float = 0.99,
        consistency_weight: float = 10.0,
        rampup_epochs: float = 5.0,
        augment: str = "standard",
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
        if not 0.0 <= ema_decay <= 1.0:
            raise MaddConfigError(f"model.ema_decay={ema_decay} must be in [0, 1] (e.g. 0.99)")
        if not (consistency_weight >= 0 and rampup_epochs >= 0):
            raise MaddConfigError(f"model.consistency_weight={consistency_weight} and model.rampup_epochs="
                                  f"{rampup_epochs} must be >= 0")
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.student = ImageClassifier(backbone, num_classes, dropout, **(head or {}))
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)  # out of trainable_parameters(): updated by EMA only
        self.augment = build_augmentation(augment)
        self.criterion = MeanTeacherLoss(consistency_weight, rampup_epochs)
        self.ce_weights = ClassWeights(class_weights, num_classes)
        self.ema_decay = ema_decay
        self._ema_step = -1  # the global step of the last EMA update (guards gradient accumulation)

    def train_splits(self) -> list[str]:
        return ["target_labeled", "target_unlabeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labels = batch["target_labeled"]["label"]
        images = torch.cat([batch["target_labeled"]["image"], batch["target_unlabeled"]["image"]])
        with torch.no_grad():
            student_view, teacher_view = self.augment(images), self.augment(images)
            teacher_logits = self.teacher(teacher_view)
        student_logits = self.student(student_view)
        out = self.criterion(student_logits, teacher_logits, labels, self._epoch_progress(batch_idx),
                              self.ce_weights.weight)
        agreement = (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean()
        self.log_dict(
            {"train/loss": out.loss, "train/loss_sup": out.loss_sup, "train/loss_cons": out.loss_cons},
            prog_bar=True, batch_size=len(labels),
        )
        self.log_dict({"train/cons_weight": out.weight, "train/teacher_agreement": agreement},
                      batch_size=len(images))
        return out.loss

    def _epoch_progress(self, batch_idx: int) -> float:
        """Training time in fractional epochs (the ramp-up's unit), from the trainer's loop state."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        per_epoch = trainer.num_training_batches
        fraction = batch_idx / per_epoch if per_epoch and per_epoch != float("inf") else 0.0
        return trainer.current_epoch + fraction

    def current_ema_decay(self, step: int) -> float:
        """:func:`~madd.models.ema.warmup_decay`: a true running mean at first, then the fixed decay."""
        return warmup_decay(step, self.ema_decay)

    def on_fit_start(self) -> None:
        # A fresh fit starts the teacher as the student, whatever initialised the student after construction
        # (a backbone transfer, an earlier stage); with the EMA warm-up the teacher is then the exact running
        # mean of the student's weights. A resumed fit keeps the teacher restored from the checkpoint.
        if self.trainer.ckpt_path is None:
            copy_weights(self.teacher, self.student)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.trainer.global_step
        if step == self._ema_step:  # no optimiser step this batch (gradient accumulation): student unchanged
            return
        self._ema_step = step
        decay = self.current_ema_decay(step)
        ema_update(self.teacher, self.student, decay)
        self.log("train/ema_decay", decay)
