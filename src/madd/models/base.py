"""Shared evaluation, optimisation and checkpoint plumbing for every image-level method.

Subclasses implement ``forward(images) -> logits`` and ``training_step``; they may override
``anomaly_map(images) -> (B, 1, H, W)`` in [0, 1] to get pixel metrics and box-level localisation, and
``eval_outputs(images) -> (logits, map or None)`` when both come out of one pass.
Metrics are logged as ``val/<name>`` and ``test/<name>``; see :mod:`madd.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from madd.errors import MaddConfigError
from madd.metrics import DefectMetrics, PixelMetrics
from madd.models.class_weights import ClassWeights


class DefectModule(L.LightningModule):
    """Args:
        num_classes, class_names, normal_index: from the data config.
        optimizer: a partial optimizer (Hydra ``_partial_: true``) taking ``params``.
        scheduler: optional partial LR scheduler taking ``optimizer``; stepped per epoch.
        pixel_threshold: threshold on the anomaly map for per-image F1/IoU and boxes.
        target_far: the false-alarm rate at which ``DR_at_FAR`` reads the ROC (:class:`DefectMetrics`).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        pixel_threshold: float = 0.5,
        target_far: float = 0.05,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise MaddConfigError(f"model.num_classes={num_classes} but {len(self.class_names)} class names given")
        self.normal_index = normal_index
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None  # `model/scheduler=none` composes to an empty dict
        self.val_metrics = DefectMetrics(num_classes, normal_index, target_far)
        self.test_metrics = DefectMetrics(num_classes, normal_index, target_far)
        self.val_pixel = PixelMetrics(pixel_threshold)
        self.test_pixel = PixelMetrics(pixel_threshold)
        self.pixel_threshold = pixel_threshold
        self.run_config: dict | None = None  # the resolved Hydra config, stored in checkpoints
        self.test_outputs: dict[str, torch.Tensor] = {}

    def setup(self, stage: str) -> None:
        """Resolves every ``model.class_weights`` (:class:`ClassWeights` submodule) from the data module's labels
        when fitting starts; subclasses that override ``setup`` call ``super().setup(stage)``."""
        if stage == "fit":
            for weights in self.modules():
                if isinstance(weights, ClassWeights):
                    weights.fit(self.trainer)

    # ----------------------------------------------------------------- to override
    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor | None:
        return None

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and anomaly map of a batch (two calls by default; one pass where a model overrides it)."""
        return self(images), self.anomaly_map(images)

    # ----------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict, stage: str, outputs: tuple | None = None) -> None:
        """Metrics of one batch; ``outputs``: its ``(logits, map)`` when the subclass computed them already."""
        images, target = batch["image"], batch["label"]
        logits, amap = outputs if outputs is not None else self.eval_outputs(images)
        probs = logits.softmax(1)
        self.log(f"{stage}/loss", F.cross_entropy(logits, target), batch_size=len(target), sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(probs, target)
        if amap is not None and batch["has_mask"].any():
            keep = batch["has_mask"]
            (self.val_pixel if stage == "val" else self.test_pixel).update(amap[keep], batch["mask"][keep])
        if stage == "test":
            self.test_outputs.setdefault("probs", []).append(probs.detach().cpu())
            self.test_outputs.setdefault("target", []).append(target.detach().cpu())
            # positions in the test set: report.py joins predictions with defect areas through them
            self.test_outputs.setdefault("index", []).append(batch["index"].detach().cpu())

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        pixel = self.val_pixel if stage == "val" else self.test_pixel
        values = metrics.compute()
        if pixel.f1.update_count:
            values.update(pixel.compute())
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, sync_dist=True)
        if stage == "test":
            self.test_confusion = metrics.confusion_matrix().cpu()
            self.test_outputs = {k: torch.cat(v) for k, v in self.test_outputs.items() if isinstance(v, list)}
        metrics.reset()
        pixel.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.test_outputs = {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        logits, amap = self.eval_outputs(batch["image"])
        probs = logits.softmax(1)
        out = {"probs": probs, "pred": probs.argmax(1)}
        if amap is not None:
            out["anomaly_map"] = amap
        return out

    # ----------------------------------------------------------------- optimisation
    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise MaddConfigError("model.optimizer is not set; pick one with model/optimizer=adamw|adam|sgd")
        optimizer = self.optimizer_factory(params=self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)}}

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["madd_config"] = self.run_config
