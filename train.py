"""Train and test a defect detector: ``python train.py experiment=madd_awdd`` (``--help`` lists the groups).

The same as ``madd train``; the work is :func:`madd.tasks.train`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return tasks.train(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
