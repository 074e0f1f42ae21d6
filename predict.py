"""Predict a folder of images: ``python predict.py model_file=<.ckpt|.onnx> input_dir=<folder>`` (see conf/predict.yaml).

The same as ``madd predict``: :func:`madd.tasks.predict` on this folder's ``conf/`` (Hydra's flags work as usual).
"""

from pathlib import Path

from madd.console import run_script

if __name__ == "__main__":
    run_script("predict", Path(__file__).resolve().parent)
