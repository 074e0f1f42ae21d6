"""Train and test a defect detector: ``python train.py experiment=madd_awdd`` (``--help`` lists the groups).

The same as ``madd train``: :func:`madd.tasks.train` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("train", Path(__file__).resolve().parent)
