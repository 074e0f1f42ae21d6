"""Knowledge distillation of a (pruned) student from a teacher: MADD Phase 3, usable on its own.

From any two checkpoints (``conf/model/distillation.yaml``)::

    python train.py experiment=distill_awdd model.teacher.path=<teacher.ckpt>

or programmatically from two networks (:func:`madd.models.madd.phase3.phase3_stage`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from madd.checkpoint import network_spec
from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.base import DefectModule
from madd.models.distillation.loss import DistillationLoss
from madd.models.distillation.torch_model import FrozenTeacher


def _num_outputs(net: nn.Module) -> int | None:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class DistillationModule(DefectModule):
    """Trains ``student`` (images -> logits) from a frozen ``teacher`` with :class:`DistillationLoss`.

    Args:
        student, teacher: networks mapping raw [0, 1] images to class logits (e.g. ``ImageClassifier``).
        temperature, alpha_kd, alpha_ce: the loss (soft-target KL at temperature ``T`` and hard-label CE).
        train_split: the labelled split for the cross-entropy.
        kd_splits: splits whose images get the soft-target term; adding ``target_unlabeled`` uses the
            unlabelled pool without its labels (the teacher labels it softly).
        augment: kornia preset applied to the training images (the same view goes to both networks).
        num_classes, class_names, normal_index: as for every ``DefectModule``; ``num_classes`` defaults
            to the student's last linear layer.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha_kd: float = 0.9,
        alpha_ce: float = 0.1,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        train_split: str = "target_labeled",
        kd_splits: Sequence[str] = ("target_labeled",),
        augment: str = "weak",
        optimizer=None,
        scheduler=None,
        pixel_threshold: float = 0.5,
    ) -> None:
        num_classes = num_classes or (len(class_names) if class_names else _num_outputs(student))
        if num_classes is None:
            raise MaddConfigError("model.num_classes is not set and the student has no linear head to read it from")
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "scheduler"])
        for name, net in (("student", student), ("teacher", teacher)):
            out = _num_outputs(net)
            if out is not None and out != num_classes:
                raise MaddConfigError(f"model.{name} predicts {out} classes but the data has {num_classes} "
                                      f"({self.class_names}); distil between models of the same classes")
            source = getattr(net, "madd_source", None)
            saved = (source or {}).get("model", {}).get("class_names")
            if saved and class_names and list(saved) != list(class_names):
                raise MaddConfigError(f"model.{name} was trained on classes {list(saved)} but data.class_names is "
                                      f"{list(class_names)}; use the teacher's data config")
        self.student = student
        self.teacher = FrozenTeacher(teacher)
        self.criterion = DistillationLoss(temperature, alpha_kd, alpha_ce)
        self.augment = build_augmentation(augment)
        self.train_split = train_split
        self.kd_splits = list(kd_splits)
        if not self.kd_splits:
            raise MaddConfigError("model.kd_splits is empty; give at least one split (e.g. [target_labeled])")

    def train_splits(self) -> list[str]:
        return list(dict.fromkeys([self.train_split, *self.kd_splits]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    def deploy_network(self) -> nn.Module:
        """What export/predict run: the student (the teacher is for training only)."""
        return self.student

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(self.student, "anomaly_map", None)
        return fn(images) if callable(fn) else None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        views = {}
        with torch.no_grad():
            for split in self.train_splits():
                views[split] = self.augment(batch[split]["image"])
        kd_images = torch.cat([views[s] for s in self.kd_splits])
        n_lab = len(views[self.train_split])
        if self.train_split in self.kd_splits:
            # one student pass over everything; the labelled images are the slice at their position
            start = sum(len(views[s]) for s in self.kd_splits[: self.kd_splits.index(self.train_split)])
            student_kd = self(kd_images)
            student_lab = student_kd[start : start + n_lab]
        else:
            student_kd = self(kd_images)
            student_lab = self(views[self.train_split])
        teacher_kd = self.teacher(kd_images)
        target = batch[self.train_split]["label"]
        parts = self.criterion(student_kd, teacher_kd, student_lab, target)
        acc = (student_lab.argmax(1) == target).float().mean()
        agree = (student_kd.argmax(1) == teacher_kd.argmax(1)).float().mean()
        self.log_dict({"train/loss": parts["loss"], "train/loss_kd": parts["loss_kd"], "train/loss_ce": parts["loss_ce"],
                       "train/accuracy": acc, "train/teacher_agreement": agree}, prog_bar=True, batch_size=n_lab)
        return parts["loss"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        config = checkpoint.get("madd_config")
        if not config:
            return
        # Store how to rebuild both networks (their source model configs) instead of the source paths, so
        # this checkpoint loads on its own (madd.checkpoint.load_module) on a machine without those files.
        config = copy.deepcopy(config)
        for name, net in (("student", self.student), ("teacher", self.teacher.net)):
            spec = network_spec(net)
            if spec is not None:
                config["model"][name] = spec
        checkpoint["madd_config"] = config
