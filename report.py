"""Turn a multirun folder into the paper's tables: ``python report.py dir=logs/<task>/multiruns/<date>``.

Options (see conf/report.yaml): rows=[model] columns=[data] reference=<row> metrics=[test/mAP,...]
delta={metric:test/mAP,reference:<row>} small_defect_fraction=0.01 rare_below=5 out=<folder>.

The same as ``madd report``: :func:`madd.tasks.report` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("report", Path(__file__).resolve().parent)
