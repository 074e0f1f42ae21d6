"""Domain discrepancy matrix and source selection (RTLAOI-DD):
``python select_source.py target=synthetic_awdd 'sources=[synthetic_metal,synthetic_bdd,neu_det]'``.

Prints every dataset as target against every other as source, writes ``discrepancy_matrix.csv``,
``discrepancy_pairs.csv`` and ``discrepancy_heatmap.png`` into the run folder and names the chosen source.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import madd.utils.resolvers  # noqa: E402,F401  (before Hydra composes the config)


@hydra.main(version_base="1.3", config_path="conf", config_name="select_source")
def main(cfg: DictConfig) -> None:
    from madd.cli import run_task
    from madd.utils.schema import OutputDirSchema
    from madd.transfer.source_selection import run_matrix

    run_task(run_matrix, cfg, OutputDirSchema)


if __name__ == "__main__":
    from madd.cli import run_hydra

    run_hydra(main)  # a config Hydra cannot compose exits 2, as every bad input
