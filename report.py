"""Turn a multirun folder into the paper's tables: ``python report.py dir=logs/<task>/multiruns/<date>``.

Options (see conf/report.yaml): rows=[model] columns=[data] reference=<row> metrics=[test/mAP,...]
delta={metric:test/mAP,reference:<row>} small_defect_fraction=0.01 rare_below=5 out=<folder>.
The same as ``madd report``; the work is :func:`madd.tasks.report`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
def main(cfg: DictConfig) -> None:
    return tasks.report(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
