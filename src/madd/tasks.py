"""What each command does with its composed config: one function per Hydra entry point.

The root scripts (``train.py``, ``predict.py``, ...) and the ``madd`` command (:mod:`madd.console`) are thin
``@hydra.main`` wrappers around these, so both run exactly the same code. Each goes through
:func:`madd.cli.run_task`, the one exit path for bad input (one message, exit status 2).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import madd.utils.resolvers  # noqa: F401  (before Hydra composes a config)
from madd.cli import run_task


def train(cfg: DictConfig) -> float | None:
    """``train.py``: fit and test (``conf/train.yaml``); returns the sweep objective (``optimized_metric``)."""
    from madd.utils.config import check_config
    from madd.utils.schema import TrainSchema

    # required values, types, ranges and folders fail now, with the key, before torch is even imported
    run_task(lambda c: check_config(c, TrainSchema), cfg)
    from madd.pipeline import objective_value
    from madd.pipeline import train as train_pipeline

    metrics = run_task(train_pipeline, cfg)
    return run_task(lambda c: objective_value(metrics, c.get("optimized_metric")), cfg)


def _predict(cfg: DictConfig) -> dict:
    from madd.deploy.predict import predict_folder

    df = predict_folder(cfg.model_file, cfg.input_dir, cfg.output_dir, cfg.batch_size, cfg.device, cfg.overlays,
                        cfg.threshold, cfg.min_box_area)
    print(f"{len(df)} images, {int(df['defect'].sum())} flagged defective -> {Path(cfg.output_dir) / 'predictions.csv'}")
    return {"images": len(df)}


def predict(cfg: DictConfig) -> None:
    """``predict.py``: a folder of images through a ``.ckpt`` or ``.onnx`` model (``conf/predict.yaml``)."""
    from madd.utils.schema import PredictSchema

    run_task(_predict, cfg, PredictSchema)


def _export(cfg: DictConfig) -> dict:
    from madd.deploy.export import export_checkpoint

    return export_checkpoint(cfg.ckpt, cfg.output_dir, list(cfg.formats), cfg.exporter, cfg.opset, cfg.tolerance,
                             cfg.parity_batch, cfg.parity_images, cfg.name, cfg.seed)


def export(cfg: DictConfig) -> None:
    """``export.py``: ONNX/TorchScript with the parity check (``conf/export.yaml``)."""
    from madd.utils.schema import ExportSchema

    result = run_task(_export, cfg, ExportSchema)
    print(OmegaConf.to_yaml({k: v for k, v in result.items() if k != "parity"}))


def report(cfg: DictConfig) -> None:
    """``report.py``: the tables, statistics and plots of run folders (``conf/report.yaml``)."""
    from madd.reporting.report import main as make_report
    from madd.utils.schema import ReportSchema

    run_task(lambda c: make_report(OmegaConf.to_container(c, resolve=True)), cfg, ReportSchema)


def select_source(cfg: DictConfig) -> None:
    """``select_source.py``: the domain discrepancy matrix and the chosen source (``conf/select_source.yaml``)."""
    from madd.transfer.source_selection import run_matrix
    from madd.utils.schema import OutputDirSchema

    run_task(run_matrix, cfg, OutputDirSchema)


def rank_checkpoints(cfg: DictConfig) -> None:
    """``rank_checkpoints.py``: D-deepscore, LogME and H-score of checkpoints (``conf/rank_checkpoints.yaml``)."""
    from madd.transfer.checkpoint_ranking import run_ranking
    from madd.utils.schema import OutputDirSchema

    run_task(run_ranking, cfg, OutputDirSchema)
