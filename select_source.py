"""Domain discrepancy matrix and source selection (RTLAOI-DD):
``python select_source.py target=synthetic_awdd 'sources=[synthetic_metal,synthetic_bdd,neu_det]'``.

Prints every dataset as target against every other as source, writes ``discrepancy_matrix.csv``,
``discrepancy_pairs.csv`` and ``discrepancy_heatmap.png`` into the run folder and names the chosen source.
The same as ``madd select-source``; the work is :func:`madd.tasks.select_source`.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from madd import tasks  # noqa: E402  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="select_source")
def main(cfg: DictConfig) -> None:
    return tasks.select_source(cfg)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
