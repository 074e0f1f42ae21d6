"""ONNX/TorchScript export with parity, and folder prediction with the training preprocessing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO, TINY_DATA, compose_config
from hydra.utils import instantiate
from PIL import Image

from madd.checkpoint import save_module
from madd.pruning.groups import find_groups
from madd.compression.masks import apply_masks, compute_masks
from madd.pruning.physical import remove_pruned_channels
from madd.data.dataset import DefectDataset
from madd.data.records import Record
from madd.deploy import export as export_mod
from madd.deploy.export import ExportParityError, export_checkpoint
from madd.deploy.images import image_dataset, list_images
from madd.deploy.predict import predict_folder
from madd.models.supervised import SupervisedClassifier
from madd.pipeline import run_config




class MapClassifier(SupervisedClassifier):
    """A classifier with an anomaly map (the image brightness: a predictable stand-in for a learned map)."""

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory, data_dir):
    """A physically pruned ResNet-18 classifier with an anomaly map, saved like train.py saves checkpoints."""
    tmp = tmp_path_factory.mktemp("deploy")
    cfg = compose_config([*TINY_DATA, f"model._target_={__name__}.MapClassifier"], tmp, data_dir)
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="partial").eval()
    image = torch.rand(1, 3, 64, 64)
    groups = find_groups(module.net, image, "all")
    masks = compute_masks(module.net, groups, 0.5)
    apply_masks(module.net, groups, masks)
    remove_pruned_channels(module.net, image, groups, masks)
    return save_module(module, tmp / "pruned.ckpt", run_config(cfg)), module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    square = np.zeros((96, 128, 3), np.uint8)  # H=96, W=128: a white square at x 32..64, y 24..48
    square[24:48, 32:64] = 255
    Image.fromarray(square).save(root / "square.png")
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    (root / "jpeg_named.png").write_bytes(buf.getvalue())  # JPEG bytes behind a .png name
    (root / "sub").mkdir()
    Image.fromarray(np.full((40, 40), 30, np.uint8)).save(root / "sub" / "grey.bmp")
    (root / "notes.txt").write_text("not an image")
    return root


def test_export_onnx_and_torchscript_with_parity(pruned_ckpt, image_folder, tmp_path):
    path, module = pruned_ckpt
    result = export_checkpoint(path, tmp_path, exporter="dynamo", parity_images=image_folder)
    rows = {(r["file"], r["output"]): r for r in result["parity"]}
    assert set(rows) == {("model.onnx", "probs"), ("model.onnx", "anomaly_map"),
                         ("model.torchscript.pt", "probs"), ("model.torchscript.pt", "anomaly_map")}
    assert all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in rows.values())
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["class_names"] == module.class_names and meta["input"]["shape"] == ["batch", 3, 64, 64]
    assert meta["outputs"] == ["probs", "anomaly_map"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, amap = session.run(None, {"image": np.random.rand(5, 3, 64, 64).astype(np.float32)})  # dynamic batch
    assert probs.shape == (5, len(module.class_names)) and amap.shape == (5, 1, 64, 64)


def test_parity_failure_is_an_error(pruned_ckpt, tmp_path, monkeypatch):
    path, _ = pruned_ckpt
    real = export_mod.run_onnx
    monkeypatch.setattr(export_mod, "run_onnx", lambda p, x: [o + 1e-2 for o in real(p, x)])
    with pytest.raises(ExportParityError, match="model.onnx:probs"):
        export_checkpoint(path, tmp_path, formats=["onnx"], exporter="legacy")


def test_prediction_uses_the_training_preprocessing(image_folder):
    files = list_images(image_folder)
    assert [f.name for f in files] == ["jpeg_named.png", "square.png", "grey.bmp"]
    ours = image_dataset(files, (3, 64, 64))
    training = DefectDataset([Record(str(f), 0) for f in files], 64, 3)
    for i in range(len(files)):
        assert torch.equal(ours[i]["image"], training[i]["image"])


def test_predict_folder_csv_boxes_and_overlays(pruned_ckpt, image_folder, tmp_path):
    path, module = pruned_ckpt
    df = predict_folder(path, image_folder, tmp_path / "torch")
    assert df["file"].tolist() == ["jpeg_named.png", "square.png", "sub/grey.bmp"]
    probs = df[[f"p_{c}" for c in module.class_names]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (df["defect"] == (df["class"] != "good")).all()
    box = [float(v) for v in df.set_index("file").loc["square.png", "boxes"].split()]
    np.testing.assert_allclose(box, [32, 24, 64, 48], atol=2.5)  # original-image pixels, not model pixels
    assert df.set_index("file").loc["sub/grey.bmp", "boxes"] == ""  # a dark image: no region above threshold
    overlays = sorted(p.name for p in (tmp_path / "torch" / "overlays").iterdir())
    assert overlays == ["jpeg_named.png.png", "square.png.png", "sub__grey.bmp.png"]
    assert Image.open(tmp_path / "torch" / "overlays" / "square.png.png").size == (128, 96)

    # the exported model predicts the same through onnxruntime, from the CLI
    export_checkpoint(path, tmp_path / "export", formats=["onnx"], exporter="legacy")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "predict.py", f"model_file={tmp_path / 'export' / 'model.onnx'}",
                           f"input_dir={image_folder}", f"output_dir={tmp_path / 'onnx'}", "overlays=false",
                           f"paths.log_dir={tmp_path / 'logs'}"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_df = pd.read_csv(tmp_path / "onnx" / "predictions.csv")
    assert onnx_df["class"].tolist() == df["class"].tolist()
    np.testing.assert_allclose(onnx_df["score"], df["score"], atol=1e-4)


def test_cli_reports_bad_input_with_status_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "export.py", f"ckpt={tmp_path / 'nope.ckpt'}", f"paths.log_dir={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "does not point to a file" in proc.stderr and "ckpt=" in proc.stderr
