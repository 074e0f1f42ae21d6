"""Domain discrepancy matrix and source selection (RTLAOI-DD):
``python select_source.py target=synthetic_awdd 'sources=[synthetic_metal,synthetic_bdd,neu_det]'``.

Prints every dataset as target against every other as source, writes ``discrepancy_matrix.csv``,
``discrepancy_pairs.csv`` and ``discrepancy_heatmap.png`` into the run folder and names the chosen source.

The same as ``madd select-source``: :func:`madd.tasks.select_source` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("select-source", Path(__file__).resolve().parent)
