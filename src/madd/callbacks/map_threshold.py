"""Set the anomaly-map threshold of any model with an ``anomaly_map`` (MADD's reconstruction map, distillation)
on the validation split before testing, with the rule the normal-only detectors use
(:func:`madd.metrics.threshold.map_threshold`), instead of the fixed ``model.pixel_threshold``.

``callbacks=[default,map_threshold]``. At ``on_test_start`` (the tested weights are loaded by then) it runs the
validation images through ``anomaly_map``, sets the threshold of the per-image F1/IoU (and of ``pixel_threshold``,
which boxes use), and logs it as ``test/pixel_threshold``. At ``on_test_end`` it writes the value into the tested
checkpoint file (:func:`madd.checkpoint.store_pixel_threshold`), so ``predict.py`` and ``export.py`` use it with
no ``threshold=``. (When a post-fit stage such as MADD's Phase 3 replaced the weights, the tested weights have no
file of their own: pass the logged value as ``threshold=``.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from madd.checkpoint import store_pixel_threshold
from madd.metrics.threshold import map_threshold

log = logging.getLogger(__name__)


class MapThreshold(L.Callback):
    def __init__(self, mode: str = "far", target_far: float = 0.05) -> None:
        self.mode, self.target_far = mode, target_far
        self.value: float | None = None
        self.rule = ""

    @torch.no_grad()
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(pl_module, "anomaly_map"):
            return
        parts: dict[str, list[torch.Tensor]] = {}
        was_training = pl_module.training
        pl_module.eval()
        for batch in datamodule.split_loader("val"):
            amap = pl_module.anomaly_map(batch["image"].to(pl_module.device))
            if amap is None:
                log.warning("callbacks.map_threshold: %s has no anomaly map; nothing to set", type(pl_module).__name__)
                return
            for key, value in (("maps", amap.cpu()), ("label", batch["label"]), ("has_mask", batch["has_mask"]),
                               ("mask", batch["mask"])):
                parts.setdefault(key, []).append(value)
        pl_module.train(was_training)
        val = {k: torch.cat(v) for k, v in parts.items()}
        is_defect = val["label"] != pl_module.normal_index
        choice = map_threshold(val["maps"], is_defect, val["has_mask"], val["mask"], self.target_far, self.mode)
        self.value, self.rule = choice.value, choice.rule
        pl_module.pixel_threshold = choice.value
        pl_module.test_pixel.threshold = choice.value
        log.info("anomaly-map threshold %.4g set on %d validation images (%s rule)", choice.value, len(is_defect),
                 choice.rule)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.value is not None:
            pl_module.log("test/pixel_threshold", self.value)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = trainer.ckpt_path
        if self.value is None or not path or not Path(path).is_file() or not trainer.is_global_zero:
            return
        store_pixel_threshold(path, self.value, f"{self.rule} on validation")
        log.info("anomaly-map threshold %.4g stored in %s", self.value, path)
