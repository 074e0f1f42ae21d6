"""Shared test helpers (plain functions and constants; fixtures live in ``tests/conftest.py``): the repository's
paths, config composition like ``train.py``'s, the tiny-data overrides, ``python train.py`` in this process.

``tests/`` is on ``sys.path`` (``pythonpath = ["tests"]`` in ``pyproject.toml``), so tests write
``from helpers import compose_config``; ``bench/`` scripts put ``tests/`` on the path themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import madd.utils.resolvers  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("MADD_SHARED_DATA", REPO.parent / "shared" / "data"))

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real datasets not present at {SHARED_DATA} (they live in ../shared/data)"
)


def compose_config(overrides: list[str], tmp_path: Path, data_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` like ``train.py`` would, with outputs under ``tmp_path``.

    Small by default: tiny synthetic datasets, 1 thread, no progress bar.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.paths.shared_data_dir = str(SHARED_DATA)
        if "callbacks" in cfg and cfg.callbacks and "rich_progress_bar" in cfg.callbacks:
            del cfg.callbacks["rich_progress_bar"]
    HydraConfig().set_config(cfg)
    return cfg


TINY_DATA = [
    "data.target.num_images=80",
    "data.target.image_size=64",
    "data.image_size=64",
    "data.label_budget.total=10",
    "data.batch_size=4",
    "data.eval_batch_size=16",
]
TINY_SOURCE = ["data.source.num_images=40", "data.source.image_size=64"]
FAST = [*TINY_DATA, *TINY_SOURCE, "++trainer.fast_dev_run=true", "callbacks.rich_progress_bar=null", "logger=csv"]


def run_train_main(argv: list[str], monkeypatch) -> None:
    """``python train.py <argv>`` inside this process (imports are paid once per test session)."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), *argv])
    GlobalHydra.instance().clear()
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()
