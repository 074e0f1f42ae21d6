"""Rank pretrained checkpoints for a target dataset without fine-tuning (D-deepscore, LogME, H-score):
``python rank_checkpoints.py data=synthetic_awdd 'checkpoints=[a/last.ckpt,b/last.ckpt,random:resnet18]'``.

The same as ``madd rank-checkpoints``: :func:`madd.tasks.rank_checkpoints` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("rank-checkpoints", Path(__file__).resolve().parent)
