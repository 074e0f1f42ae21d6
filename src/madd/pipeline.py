"""What ``train.py`` runs: build data, model, callbacks, loggers and trainer from the config; fit; test the
best checkpoint; print the test table.

Methods with extra stages (MADD's transfer initialisation) implement ``run_stages(datamodule, build_trainer)``
on their LightningModule; it is called before the main fit with a factory for per-stage trainers.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import madd.utils.resolvers  # noqa: F401  (registers ${len:...} and ${index_of:...})
from madd.utils.instantiate import instantiate_callbacks, instantiate_loggers
from madd.utils.table import print_confusion, print_metrics_table

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, stage: str | None = None, **overrides) -> L.Trainer:
    """A trainer from ``cfg.trainer`` with the configured callbacks and loggers.

    With ``stage`` set (e.g. ``"stage1_source"``) the checkpoints go to ``<output_dir>/<stage>/checkpoints``
    so every stage keeps its own best and last checkpoint.
    """
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if stage is not None:
        for cb in callbacks:
            if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint):
                cb.dirpath = str(Path(cfg.paths.output_dir) / stage / "checkpoints")
    loggers = instantiate_loggers(cfg.get("logger")) if stage is None else False
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, **overrides)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as the config says; return the test metrics (and the monitored val metric)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="partial")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    if hasattr(model, "train_splits"):
        datamodule.train_splits = list(model.train_splits())
    if "source" in datamodule.train_splits and datamodule.source_spec is None:
        from madd.errors import MaddConfigError

        raise MaddConfigError(f"{type(model).__name__} trains on a source domain but data.source is null; "
                              "pick a data config with a source (e.g. data=synthetic_awdd) or set data.source")
    trainer = build_trainer(cfg)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if hasattr(model, "run_stages"):
        model.run_stages(datamodule, lambda stage, **kw: build_trainer(cfg, stage=stage, **kw))

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics: dict[str, float] = {}
    monitor = trainer.checkpoint_callback.monitor if trainer.checkpoint_callback else None
    if monitor and monitor in trainer.callback_metrics:
        metrics[monitor] = float(trainer.callback_metrics[monitor])
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint found; testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if trainer.is_global_zero:
            print_metrics_table({k: v for k, v in metrics.items() if k.startswith("test/")})
            if getattr(model, "test_confusion", None) is not None:
                print_confusion(model.test_confusion, model.class_names)
    return metrics


def objective_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a Hydra sweeper optimises (``optimized_metric`` in the config); NaN-safe."""
    if not name:
        return None
    if name not in metrics:
        from madd.errors import MaddConfigError

        raise MaddConfigError(f"optimized_metric={name!r} was not logged; available: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else float("-inf")
