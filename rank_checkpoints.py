"""Rank pretrained checkpoints for a target dataset without fine-tuning (D-deepscore, LogME, H-score):
``python rank_checkpoints.py data=synthetic_awdd 'checkpoints=[a/last.ckpt,b/last.ckpt,random:resnet18]'``.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import madd.utils.resolvers  # noqa: E402,F401  (before Hydra composes the config)


@hydra.main(version_base="1.3", config_path="conf", config_name="rank_checkpoints")
def main(cfg: DictConfig) -> None:
    from madd.cli import run_task
    from madd.utils.schema import OutputDirSchema
    from madd.transfer.checkpoint_ranking import run_ranking

    run_task(run_ranking, cfg, OutputDirSchema)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
