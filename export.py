"""Export a checkpoint to ONNX/TorchScript and check parity: ``python export.py ckpt=<path>`` (see conf/export.yaml).

The same as ``madd export``; the work is :func:`madd.tasks.export`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    return tasks.export(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
