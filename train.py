"""Train and test a defect detector: ``python train.py experiment=madd_awdd`` (``--help`` lists the groups)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import madd.utils.resolvers  # noqa: E402,F401  (before Hydra composes the config)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from madd.cli import run_task
    from madd.utils.config import check_config
    from madd.utils.schema import TrainSchema

    # required values, types, ranges and folders fail now, with the key, before torch is even imported
    run_task(lambda c: check_config(c, TrainSchema), cfg)
    from madd.pipeline import objective_value, train

    metrics = run_task(train, cfg)
    return run_task(lambda c: objective_value(metrics, c.get("optimized_metric")), cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
