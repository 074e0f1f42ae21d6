"""What ``train.py`` runs: build data, model, callbacks, loggers and trainer from the config; fit; test the
best checkpoint; print the test table.

Methods with stages besides the main fit (MADD: TIM before it, Phase 3 after it) declare them
(:class:`~madd.models.stage.Stage`, from ``stages()`` and ``post_stages()``); the pipeline alone builds their
trainers, serves their training splits, fits them and skips the stages before the main fit when it resumes.
"""

from __future__ import annotations

import csv
import logging
import math
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import madd.utils.resolvers  # noqa: F401  (registers ${len:...} and ${index_of:...})
from madd.callbacks.interrupt import InterruptCheckpoint
from madd.checkpoint import check_checkpoint_fits, check_resume_checkpoint
from madd.data.dataset import input_shape
from madd.deploy.cost import deploy_cost
from madd.errors import MaddConfigError, RunInterrupted
from madd.models.backbone_transfer import init_from_checkpoint, load_checkpoint_state
from madd.models.stage import Stage
from madd.reporting.run_record import write_run_record
from madd.transfer.source_selection import resolve_auto_source
from madd.utils.config import check_config
from madd.utils.instantiate import instantiate_callbacks, instantiate_clear, instantiate_loggers
from madd.utils.schema import TrainSchema
from madd.utils.table import print_confusion, print_metrics_table

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, stage: str | None = None, **overrides) -> L.Trainer:
    """A trainer from ``cfg.trainer`` with the configured callbacks and loggers.

    With ``stage`` set (e.g. ``"stage1_source"``) the checkpoints go to ``<output_dir>/<stage>/checkpoints``
    so every stage keeps its own best and last checkpoint.
    """
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if stage is not None:
        # stage trainers have no logger, and LearningRateMonitor refuses to run without one
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.LearningRateMonitor)]
        for cb in callbacks:
            if isinstance(cb, (L.pytorch.callbacks.ModelCheckpoint, InterruptCheckpoint)):
                cb.dirpath = str(Path(cfg.paths.output_dir) / stage / "checkpoints")
    loggers = instantiate_loggers(cfg.get("logger")) if stage is None else False
    return instantiate_clear(cfg.trainer, callbacks=callbacks, logger=loggers, **overrides)


def sync_csv_headers(trainer: L.Trainer) -> None:
    """Teach each CSV logger the columns its file already has before another stage appends to it.

    Under ``ddp_spawn`` (``trainer=ddp_sim``/``ddp``) fit and test run in different child processes; the test
    process's CSV writer never saw the ``val/`` columns and Lightning's header rewrite then fails
    ("dict contains fields not in fieldnames"). Merging the file's header into the writer's keys fixes that.
    """
    for lg in trainer.loggers:
        if not isinstance(lg, CSVLogger):
            continue
        writer = lg.experiment
        path = Path(writer.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


def run_config(cfg: DictConfig) -> dict:
    """The resolved config as plain containers, without the ``hydra`` node: a ``train.py`` run never has one,
    a config composed with ``return_hydra_config=True`` (the tests' ``compose_config``) has unresolvable keys
    in it (``hydra.job.num``)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def check_train_config(cfg: DictConfig) -> dict | None:
    """Everything that can be checked before any work (:class:`~madd.utils.schema.TrainSchema`: types, ranges,
    writable output folder; ``ckpt_path`` read safely and of this run's model class). Returns the checkpoint."""
    check_config(cfg, TrainSchema)
    if not cfg.get("ckpt_path"):
        return None
    return check_resume_checkpoint(cfg.ckpt_path, OmegaConf.to_container(cfg.model), bool(cfg.get("train", True)))


def _monitor(trainer: L.Trainer) -> str | None:
    return trainer.checkpoint_callback.monitor if trainer.checkpoint_callback else None


def interrupted(err: SIGTERMException, trainer: L.Trainer) -> RunInterrupted:
    """The :class:`RunInterrupted` for Lightning's stop exception (tagged by :class:`InterruptCheckpoint`).

    Only a checkpoint of the main fit resumes with ``ckpt_path``; one written in a method's stage (own trainer,
    own folder) does not, and the run is then to be started again.
    """
    checkpoint = getattr(err, "madd_checkpoint", None)
    main = [str(cb.ckpt_path) for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint)]
    return RunInterrupted(getattr(err, "madd_signal", signal.SIGTERM), checkpoint if checkpoint in main else None,
                          getattr(err, "madd_epoch", trainer.current_epoch),
                          getattr(err, "madd_step", trainer.global_step))


@contextmanager
def serving(datamodule, splits: Sequence[str]) -> Iterator[None]:
    """The data module serves ``splits`` for training (one stage), then its previous splits again."""
    previous = list(datamodule.train_splits)
    datamodule.train_splits = list(splits)
    try:
        yield
    finally:
        datamodule.train_splits = previous


def run_stage(cfg: DictConfig, stage: Stage, datamodule) -> Any:
    """Fit one declared stage with its own trainer (checkpoints in ``<output_dir>/<stage.name>/checkpoints``) on its
    training splits; return ``stage.finish(module, best checkpoint or "")``."""
    trainer = build_trainer(cfg, stage=stage.name, **stage.trainer)
    if stage.callbacks is not None:
        trainer.callbacks[0:0] = list(stage.callbacks(trainer))
    with serving(datamodule, stage.splits or stage.module.train_splits()):
        trainer.fit(stage.module, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and Path(best).is_file():
        log.info("stage %s: best checkpoint %s", stage.name, best)
    else:
        best = ""
    return stage.finish(stage.module, best)


def _run_stages(cfg: DictConfig, model, datamodule, trainer: L.Trainer, wall: dict[str, float]) -> bool:
    """The method's declared stages before the main fit (skipped when resuming it: its checkpoint holds their
    result), the main fit, then the stages after it, from the main fit's best weights. Returns whether stages after
    the fit changed the weights (then the test uses the current weights, not the fit's best checkpoint). Wall times
    go to ``wall``: ``stages`` (before the fit) and ``fit`` (the fit and the stages after it)."""
    tic = time.perf_counter()
    if hasattr(model, "stages"):
        if cfg.get("ckpt_path"):
            log.info("%s: stages before the main fit skipped (resuming from ckpt_path)", type(model).__name__)
        else:
            for stage in model.stages():
                run_stage(cfg, stage, datamodule)
    wall["stages"] = time.perf_counter() - tic
    if not cfg.get("train", True):
        return False
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    if not hasattr(model, "post_stages"):
        return False
    fit_best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if fit_best:  # the stages after the fit start from its best weights (a declaration reads them)
        model.load_state_dict(load_checkpoint_state(fit_best))
    ran = False
    for stage in model.post_stages():
        run_stage(cfg, stage, datamodule)
        ran = True
    return ran


def _fit_and_test(cfg: DictConfig, model, datamodule, trainer: L.Trainer) -> tuple[dict[str, float], dict]:
    """The method's stages around the main fit, then the test; metrics and wall times."""
    tic = time.perf_counter()  # stage wall times go to metrics.json (domain adaptation time = stages + fit)
    wall: dict[str, float] = {}
    post_changed = _run_stages(cfg, model, datamodule, trainer, wall)
    wall["adaptation"] = time.perf_counter() - tic
    wall["fit"] = wall["adaptation"] - wall["stages"]
    metrics: dict[str, float] = {}
    monitor = _monitor(trainer)
    if monitor and monitor in trainer.callback_metrics:
        metrics[monitor] = float(trainer.callback_metrics[monitor])
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best and not cfg.get("train", True):
            best = cfg.get("ckpt_path") or ""  # `train=false ckpt_path=...`: evaluate that checkpoint
        if not best:
            log.warning("no best checkpoint found; testing the current weights")
        tic = time.perf_counter()
        sync_csv_headers(trainer)
        trainer.test(model, datamodule=datamodule, ckpt_path=None if post_changed else (best or None),
                     weights_only=True)
        wall["test"] = time.perf_counter() - tic
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if trainer.is_global_zero:
            print_metrics_table({k: v for k, v in metrics.items() if k.startswith("test/")})
            if getattr(model, "test_confusion", None) is not None:
                print_confusion(model.test_confusion, model.class_names)
    return metrics, wall


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as the config says; return the test metrics (and the monitored val metric).

    SIGTERM or Ctrl-C during any fit or test raises :class:`~madd.errors.RunInterrupted` (with the
    ``last.ckpt`` written on the way out, see :mod:`madd.callbacks.interrupt`).
    """
    resume = check_train_config(cfg)  # bad values, unwritable folders, bad checkpoints: before any work
    if cfg.data.get("source") == "auto":  # RTLAOI-DD: pick the source among data.source_candidates
        resolve_auto_source(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_clear(cfg.data, _convert_="all")
    model = instantiate_clear(cfg.model, _convert_="partial")
    if cfg.get("transfer_from"):  # RTLAOI-DD 2.6: a source run's backbone; heads keep their initialisation
        init_from_checkpoint(model, cfg.transfer_from, cfg.get("transfer_freeze_stages") or 0)
    if resume is not None:
        check_checkpoint_fits(cfg.ckpt_path, resume, model)
        del resume
    model.run_config = run_config(cfg)
    if hasattr(model, "train_splits"):
        datamodule.train_splits = list(model.train_splits())
    if "source" in datamodule.train_splits and datamodule.source_spec is None:
        raise MaddConfigError(f"{type(model).__name__} trains on a source domain but data.source is null; "
                              "pick a data config with a source (e.g. data=synthetic_awdd) or set data.source")
    trainer = build_trainer(cfg)
    for lg in trainer.loggers:
        lg.log_hyperparams(run_config(cfg))

    try:
        metrics, wall = _fit_and_test(cfg, model, datamodule, trainer)
    except SIGTERMException as err:  # Lightning's stop at a safe point after SIGTERM (or Ctrl-C, see InterruptCheckpoint)
        raise interrupted(err, trainer) from None
    monitor = _monitor(trainer)
    if trainer.is_global_zero:
        best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        write_run_record(cfg.paths.output_dir, metrics, wall, datamodule, model,
                         best_scores={monitor: float(best_score)} if monitor and best_score is not None else None,
                         cost=_deploy_cost(model, cfg) if cfg.get("test", True) else None)
    return metrics


def _deploy_cost(model, cfg: DictConfig) -> dict[str, float] | None:
    """Table 5's parameters, FLOPs and FPS of the deployed network; bookkeeping must not fail a finished run."""
    try:
        return deploy_cost(model, input_shape(OmegaConf.to_container(cfg.data, resolve=True)))
    except Exception as err:  # noqa: BLE001 - any model the pipeline trains; the metrics are already safe
        log.warning("deploy cost (params/FLOPs/FPS) not measured: %s: %s", type(err).__name__, err)
        return None


def objective_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a Hydra sweeper optimises (``optimized_metric`` in the config); NaN-safe."""
    if not name:
        return None
    if name not in metrics:
        raise MaddConfigError(f"optimized_metric={name!r} was not logged; available: {sorted(metrics)}")
    value = metrics[name]
    return value if math.isfinite(value) else float("-inf")
