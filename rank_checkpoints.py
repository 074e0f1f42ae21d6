"""Rank pretrained checkpoints for a target dataset without fine-tuning (D-deepscore, LogME, H-score):
``python rank_checkpoints.py data=synthetic_awdd 'checkpoints=[a/last.ckpt,b/last.ckpt,random:resnet18]'``.

The same as ``madd rank-checkpoints``; the work is :func:`madd.tasks.rank_checkpoints`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="rank_checkpoints")
def main(cfg: DictConfig) -> None:
    return tasks.rank_checkpoints(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
