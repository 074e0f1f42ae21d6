"""Lightning orchestration shared by the normal-only detectors (PatchCore, PaDiM): fit on the normal images of
the target training pool, set the thresholds on validation, report the metrics every method reports.

The torch model (``add(images)``, ``fit()``, ``fitted``, ``forward(images) -> (scores, maps)``) does the computing;
this module:

* **fits once**, when the first training epoch (or a validation before it) starts: it reads the normal images of
  ``fit_splits`` (default ``target_labeled`` and ``target_unlabeled``: the whole training pool, as a user of a
  normal-only tool would collect known-good images) through the data module's evaluation loaders, so no image is
  dropped or repeated, and stops training after that epoch. Nothing is optimised; ``training_step`` is empty.
  The pool's defect images are never seen; its labels are used only to pick the good ones, which is the
  supervision this family of methods assumes.
* **calibrates** on the validation split (:class:`~madd.models.score_calibration.ScoreCalibration`, rule
  ``threshold.mode``/``threshold.target_far``, :mod:`madd.metrics.threshold`) and then computes the validation
  metrics with those thresholds. Test and predict use the calibrated buffers stored in the checkpoint.
* exposes :class:`CalibratedDetector` as ``deploy_network()``: images -> logits and the [0, 1] map in one pass,
  which ``export.py``/``predict.py`` run like any other model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from madd.errors import DataError, MaddConfigError
from madd.metrics.threshold import MODES
from madd.models.base import DefectModule
from madd.models.score_calibration import ScoreCalibration

log = logging.getLogger(__name__)
POOL_SPLITS = ("target_labeled", "target_unlabeled")


class CalibratedDetector(nn.Module):
    """A normal-only torch model plus its calibration: the deployed network."""

    def __init__(self, model: nn.Module, calibration: ScoreCalibration) -> None:
        super().__init__()
        self.model, self.calibration = model, calibration

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = self.model(images)
        return self.calibration.logits(scores), self.calibration.normalize_map(maps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_outputs(images)[0]

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_outputs(images)[1]


class NormalOnlyModule(DefectModule):
    """Args:
        model: the torch model (:class:`~madd.models.patchcore.PatchCoreModel`, :class:`~madd.models.padim.PadimModel`).
        num_classes, class_names, normal_index: from the data config; a normal class is required.
        fit_splits: training splits whose normal images are learnt (subset of ``target_labeled``, ``target_unlabeled``).
        threshold: ``{mode: far | f1, target_far: 0.05}`` (:mod:`madd.metrics.threshold`); ``target_far`` is also
            where ``DR_at_FAR`` reads the test ROC.
        pixel_threshold: must stay 0.5: the calibrated map puts the pixel threshold there.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        fit_splits: Sequence[str] = POOL_SPLITS,
        threshold: Mapping[str, Any] | None = None,
        pixel_threshold: float = 0.5,
    ) -> None:
        threshold = {"mode": "far", "target_far": 0.05, **dict(threshold or {})}
        super().__init__(num_classes, class_names, normal_index, None, None, pixel_threshold,
                         float(threshold["target_far"]))
        if normal_index is None:
            raise MaddConfigError(f"{type(self).__name__} learns what normal looks like and needs a normal class: "
                                  "set data.normal_class (datasets without one, e.g. NEU-DET, cannot be used)")
        if pixel_threshold != 0.5:
            raise MaddConfigError(f"model.pixel_threshold={pixel_threshold}: normal-only models calibrate the pixel "
                                  "threshold on validation and map it to 0.5; set model.threshold instead")
        bad = [s for s in fit_splits if s not in POOL_SPLITS]
        if not fit_splits or bad:
            raise MaddConfigError(f"model.fit_splits={list(fit_splits)}: choose from {list(POOL_SPLITS)}")
        if threshold["mode"] not in MODES:
            raise MaddConfigError(f"model.threshold.mode={threshold['mode']!r} is unknown; choose from {list(MODES)}")
        self.save_hyperparameters(ignore=["model", "backbone"])
        self.fit_splits = list(fit_splits)
        self.threshold_mode, self.target_far = threshold["mode"], float(threshold["target_far"])
        self.detector = CalibratedDetector(model, ScoreCalibration(num_classes, normal_index))
        self._val: dict[str, list[torch.Tensor]] = {}

    @property
    def model(self) -> nn.Module:
        return self.detector.model

    def train_splits(self) -> list[str]:
        return self.fit_splits

    def deploy_network(self) -> CalibratedDetector:
        return self.detector

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.trainer.world_size > 1:  # every rank would fit its own bank and calibrate on its own val shard
            raise MaddConfigError(f"{type(self).__name__} runs on one device (fitting is one pass, nothing to "
                                  "distribute); use trainer=cpu or trainer=gpu, not trainer=ddp*")

    # ----------------------------------------------------------------- fitting
    def fit_normal(self) -> None:
        """Learn from every normal image of ``fit_splits`` (evaluation loaders: ordered, none dropped)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise MaddConfigError(f"{type(self).__name__} reads its normal images from the data module; "
                                  "pass datamodule= to trainer.fit")
        tic, count = time.perf_counter(), 0
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for split in self.fit_splits:
                for batch in datamodule.split_loader(split):
                    normal = batch["label"] == self.normal_index
                    if normal.any():
                        self.model.add(batch["image"][normal].to(self.device))
                        count += int(normal.sum())
        if count == 0:
            raise DataError(f"the splits {self.fit_splits} hold no `{self.class_names[self.normal_index]}` images "
                            "to learn from; check data.normal_class and data.splits")
        self.model.fit()
        self.model.train(was_training)
        self.fit_images, self.fit_seconds = count, time.perf_counter() - tic
        log.info("%s fitted on %d normal images in %.1f s", type(self.model).__name__, count, self.fit_seconds)

    def _ensure_fitted(self) -> None:
        if not self.model.fitted:
            self.fit_normal()

    def configure_optimizers(self):
        # nothing is optimised: Lightning runs its mock optimizer, whose steps still count (global_step > 0), so
        # ModelCheckpoint saves the fitted, calibrated model (it skips saving at global_step 0)
        return None

    def on_train_epoch_start(self) -> None:
        self._ensure_fitted()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def on_train_epoch_end(self) -> None:
        self.trainer.should_stop = True  # one pass is the whole training

    # ----------------------------------------------------------------- validation: calibrate, then score
    def on_validation_start(self) -> None:
        self._ensure_fitted()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector(images)

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector.anomaly_map(images)

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.eval_outputs(images)

    def on_test_start(self) -> None:
        if not self.detector.calibration.calibrated:
            raise MaddConfigError(f"{type(self).__name__} has no thresholds yet: they are set on the validation split "
                                  "during training; test a checkpoint written by train.py")

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores, maps = self.model(batch["image"])
        for key, value in (("scores", scores), ("maps", maps), ("label", batch["label"]),
                           ("has_mask", batch["has_mask"]), ("mask", batch["mask"])):
            self._val.setdefault(key, []).append(value.detach())

    def on_validation_epoch_end(self) -> None:
        val = {k: torch.cat(v) for k, v in self._val.items()}
        self._val = {}
        is_defect = val["label"] != self.normal_index
        image, pixel = self.detector.calibration.fit(val["scores"], val["maps"], is_defect, val["has_mask"],
                                                     val["mask"], self.target_far, self.threshold_mode)
        log.info("thresholds on %d validation images: image %.4g (%s rule), pixel %.4g (%s rule)",
                 len(is_defect), image.value, image.rule, pixel.value, pixel.rule)
        self.log_dict({"val/image_threshold": image.value, "val/pixel_threshold": pixel.value})
        logits = self.detector.calibration.logits(val["scores"])
        self.val_metrics.update(logits.softmax(1), val["label"])
        keep = val["has_mask"].bool()
        if keep.any():
            self.val_pixel.update(self.detector.calibration.normalize_map(val["maps"][keep]), val["mask"][keep])
        self._eval_epoch_end("val")
