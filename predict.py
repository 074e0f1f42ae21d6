"""Predict a folder of images: ``python predict.py model_file=<.ckpt|.onnx> input_dir=<folder>`` (see conf/predict.yaml).

The same as ``madd predict``; the work is :func:`madd.tasks.predict`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    return tasks.predict(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
