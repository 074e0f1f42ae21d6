"""The README's main command and every other entry point, end to end in subprocesses, as a user runs them.

``python train.py experiment=madd_awdd`` runs once, shortened by overrides only (tiny data, one short epoch per
stage, one validation and test batch); ``predict.py``, ``export.py``, ``report.py`` and ``rank_checkpoints.py``
then run on what it wrote, and ``select_source.py`` on the same synthetic datasets. Nothing is imported from
madd here: a dependency that is missing from a fresh install, or an entry point that no longer starts, fails
these tests even when the unit tests pass. The backbone and its weights are whatever the preset uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, TINY_DATA, TINY_SOURCE
from PIL import Image

# every stage of the main job at its smallest: TIM's two stages and the joint stage one epoch of 1-2 steps, one
# validation and one test batch (16 images); the data at the shared tiny size
SHORT = [*TINY_DATA, *TINY_SOURCE, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "trainer.check_val_every_n_epoch=1",
         "model.tim.stage1.max_epochs=1", "model.tim.stage1.limit_train_batches=1",
         "model.tim.stage2.max_epochs=1", "model.tim.stage2.limit_train_batches=1"]


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository root, this checkout's ``src`` first on the path."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, data_dir):
    """The README's first command, shortened: its output and its run folder."""
    tmp = tmp_path_factory.mktemp("entry_points")
    run_dir = tmp / "madd_awdd"
    proc = _run("train.py", "experiment=madd_awdd", *SHORT, f"paths.data_dir={data_dir}",
                f"paths.log_dir={tmp / 'logs'}", f"hydra.run.dir={run_dir}")
    return proc, run_dir


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("to_predict")
    rng = np.random.default_rng(0)
    for i, size in enumerate([(64, 64), (90, 120)]):  # the model's size and another one
        Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(root / f"part_{i}.png")
    return root


def test_readme_main_command_prints_the_test_table(main_run):
    proc, run_dir = main_run
    assert "Test metrics" in proc.stdout and "test/mAP" in proc.stdout and "test/box_mAP50" in proc.stdout
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert 0.0 <= record["metrics"]["test/mAP"] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_predict_on_the_trained_checkpoint(main_run, image_folder, tmp_path):
    _, run_dir = main_run
    out = tmp_path / "predictions"
    proc = _run("predict.py", f"model_file={run_dir / 'checkpoints' / 'last.ckpt'}", f"input_dir={image_folder}",
                f"output_dir={out}", f"paths.log_dir={tmp_path / 'logs'}")
    assert "2 images" in proc.stdout
    table = pd.read_csv(out / "predictions.csv")
    assert table["file"].tolist() == ["part_0.png", "part_1.png"]
    probs = table.filter(regex="^p_").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert len(list((out / "overlays").iterdir())) == 2


def test_export_the_trained_checkpoint_with_parity(main_run, tmp_path):
    _, run_dir = main_run
    out = tmp_path / "export"
    proc = _run("export.py", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={out}",
                f"paths.log_dir={tmp_path / 'logs'}")
    assert "Export parity" in proc.stdout
    meta = json.loads((out / "model.onnx.json").read_text())
    assert meta["outputs"] == ["probs", "anomaly_map"]  # MADD ships its anomaly map
    assert (out / "model.torchscript.pt").is_file()


def test_report_of_the_run(main_run, tmp_path):
    _, run_dir = main_run
    out = tmp_path / "report"
    proc = _run("report.py", f"dir={run_dir}", f"out={out}")
    assert "1 completed of 1 jobs" in proc.stdout
    runs = pd.read_csv(out / "runs.csv")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert runs["test/mAP"].iloc[0] == pytest.approx(record["metrics"]["test/mAP"])


def test_rank_the_trained_checkpoint(main_run, data_dir, tmp_path):
    _, run_dir = main_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run = tmp_path / "rank"
    _run("rank_checkpoints.py", f"checkpoints=[{ckpt},random:resnet18]", "backbone_prefix=model.teacher.backbone.",
         *[o for o in TINY_DATA if o.startswith(("data.target.", "data.label_budget."))], "image_size=32",
         "threads=1", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={run}")
    table = pd.read_csv(run / "transferability.csv")
    assert set(table["checkpoint"]) == {str(ckpt), "random:resnet18"}
    assert np.isfinite(table["d_deepscore"]).all()


def test_select_source_between_the_synthetic_datasets(data_dir, tmp_path):
    run = tmp_path / "select"
    proc = _run("select_source.py", "target=synthetic_awdd", "sources=[synthetic_metal]",
                "signature.max_images=8", "signature.elbow_images=4", "signature.k_range=[1,5]",
                "signature.pixels=256", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}",
                f"hydra.run.dir={run}")
    assert "chosen source for synthetic_awdd:" in proc.stdout
    matrix = pd.read_csv(run / "discrepancy_matrix.csv", index_col=0)
    assert list(matrix.index) == ["synthetic_awdd", "synthetic_metal"] == list(matrix.columns)
    assert matrix.loc["synthetic_awdd", "synthetic_metal"] > 0 == matrix.loc["synthetic_awdd", "synthetic_awdd"]
    assert (run / "discrepancy_heatmap.png").is_file()
