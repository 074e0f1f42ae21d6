"""Set the anomaly-map threshold of any model with an ``anomaly_map`` (MADD's reconstruction map, distillation)
on the validation split before testing, with the rule the normal-only detectors use
(:func:`madd.metrics.threshold.map_threshold`), instead of the fixed ``model.pixel_threshold``.

``callbacks=[default,map_threshold]``. At ``on_test_start`` (the tested weights are loaded by then) it runs the
validation images through ``anomaly_map``, sets the threshold of the per-image F1/IoU (and of ``pixel_threshold``,
which boxes use), and logs it as ``test/pixel_threshold``. Predict/export keep the configured value: pass the
logged one as ``threshold=`` to ``predict.py``.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from madd.metrics.threshold import map_threshold

log = logging.getLogger(__name__)


class MapThreshold(L.Callback):
    def __init__(self, mode: str = "far", target_far: float = 0.05) -> None:
        self.mode, self.target_far = mode, target_far
        self.value: float | None = None

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
        self.value = choice.value
        pl_module.pixel_threshold = choice.value
        pl_module.test_pixel.threshold = choice.value
        log.info("anomaly-map threshold %.4g set on %d validation images (%s rule)", choice.value, len(is_defect),
                 choice.rule)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.value is not None:
            pl_module.log("test/pixel_threshold", self.value)
