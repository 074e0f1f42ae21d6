"""Export a checkpoint to ONNX/TorchScript and check parity: ``python export.py ckpt=<path>`` (see conf/export.yaml).

The same as ``madd export``: :func:`madd.tasks.export` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("export", Path(__file__).resolve().parent)
