"""Export a trained (or pruned) checkpoint to ONNX and TorchScript, with a printed parity check.

The exported graph is :class:`DeployModel`: raw ``[0, 1]`` images ``(B, C, H, W)`` (the data layer's
output; models normalise inside) -> ``probs`` ``(B, num_classes)`` and, where the model has one,
``anomaly_map`` ``(B, 1, H, W)`` in [0, 1]. The batch dimension is dynamic.

ONNX uses ``torch.onnx.export`` with the ``torch.export``-based exporter (``exporter=dynamo``, the
default since torch 2.9, needs onnxscript) or the legacy TorchScript-based one (``exporter=legacy``,
deprecated but faster to run). TorchScript uses ``torch.jit.trace`` (deprecated upstream in favour of
``torch.export``; kept because many edge runtimes still load TorchScript).

Parity: the exported files are run (onnxruntime on the CPU; ``torch.jit.load``) on the same inputs as
the PyTorch model and the maximum absolute difference of every output is printed against a tolerance;
a mismatch raises :class:`ExportParityError`. Beside each export a ``<name>.json`` holds what a deployment
needs: classes, normal class, input size and channels, output names, pixel threshold and the parity result.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from madd.checkpoint import load_module
from madd.data.dataset import input_shape
from madd.deploy.images import image_dataset, list_images
from madd.errors import MaddConfigError
from madd.utils.optional import require

log = logging.getLogger(__name__)
EXPORTERS = ("dynamo", "legacy")
FORMATS = ("onnx", "torchscript")


class ExportParityError(MaddConfigError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


class DeployModel(nn.Module):
    """Images -> ``probs`` (softmax of the module's logits) and ``anomaly_map`` when the module has one."""

    def __init__(self, module: nn.Module, has_map: bool) -> None:
        super().__init__()
        self.module = module
        self.has_map = has_map

    def forward(self, image: torch.Tensor):
        if not self.has_map:
            return self.module(image).softmax(1)
        if hasattr(self.module, "eval_outputs"):  # logits and map from one pass (DefectModule's contract)
            logits, amap = self.module.eval_outputs(image)
        else:
            logits, amap = self.module(image), self.module.anomaly_map(image)
        return logits.softmax(1), amap.clamp(0, 1)


def deploy_model(module: nn.Module, shape: Sequence[int]) -> DeployModel:
    """The exported graph of ``module``: its ``deploy_network()`` when it has one (distillation: the student
    alone, so the teacher's weights are not shipped), else the module itself."""
    net = module.deploy_network() if hasattr(module, "deploy_network") else module
    amap = getattr(net, "anomaly_map", None)
    with torch.no_grad():
        has_map = callable(amap) and amap(torch.rand(1, *shape)) is not None
    return DeployModel(net, has_map).eval()


def output_names(model: DeployModel) -> list[str]:
    return ["probs", "anomaly_map"] if model.has_map else ["probs"]


def _as_list(out) -> list[np.ndarray]:
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in items]


def export_onnx(model: DeployModel, path: Path, shape: Sequence[int], exporter: str = "dynamo", opset: int = 18) -> Path:
    """Write ``path`` (one self-contained file) with a dynamic batch dimension."""
    if exporter not in EXPORTERS:
        raise MaddConfigError(f"exporter={exporter!r} is unknown; choose from {list(EXPORTERS)}")
    example = (torch.rand(2, *shape),)
    names = output_names(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, torch.jit.TracerWarning))
        if exporter == "dynamo":
            require("onnxscript", "onnxscript", "exporter=dynamo (torch.onnx's torch.export-based exporter)")
            torch.onnx.export(
                model, example, str(path), input_names=["image"], output_names=names, opset_version=opset,
                dynamo=True, external_data=False, verbose=False,
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        else:
            axes = {n: {0: "batch"} for n in ["image", *names]}
            torch.onnx.export(model, example, str(path), input_names=["image"], output_names=names,
                              opset_version=opset, dynamo=False, dynamic_axes=axes)
    return path


def export_torchscript(model: DeployModel, path: Path, shape: Sequence[int]) -> Path:
    # LightningModule's `trainer` property raises when detached unless it is being scripted; Lightning's own
    # `to_torchscript` sets the same flag.
    lightning_modules = [m for m in model.modules() if hasattr(m, "_jit_is_scripting")]
    for m in lightning_modules:
        m._jit_is_scripting = True
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, torch.jit.TracerWarning))
            traced = torch.jit.trace(model, (torch.rand(2, *shape),), check_trace=False)
            torch.jit.save(traced, str(path))
    finally:
        for m in lightning_modules:
            m._jit_is_scripting = False
    return path


def run_onnx(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    ort = require("onnxruntime", "onnxruntime", "the ONNX parity check")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})


def run_torchscript(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return _as_list(traced(images))


def parity(model: DeployModel, runner, path: Path, images: torch.Tensor, tolerance: float) -> list[dict[str, Any]]:
    """Max |exported - PyTorch| per output on ``images`` (and whether the predicted classes agree)."""
    with torch.no_grad():
        reference = _as_list(model(images))
    exported = runner(path, images)
    rows = []
    for name, ref, got in zip(output_names(model), reference, exported):
        diff = float(np.abs(ref - got).max()) if ref.shape == got.shape else float("inf")
        rows.append({"file": path.name, "output": name, "max_abs_diff": diff, "tolerance": tolerance,
                     "ok": diff <= tolerance})
    rows[0]["same_class"] = bool((reference[0].argmax(1) == exported[0].argmax(1)).all())
    return rows


def print_parity(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Export parity (exported vs PyTorch)")
    for col in ("file", "output", "max |diff|", "tolerance", "same class", "ok"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["file"], r["output"], f"{r['max_abs_diff']:.3e}", f"{r['tolerance']:.0e}",
                      str(r.get("same_class", "")), "[green]yes[/]" if r["ok"] else "[red]NO[/]")
    Console().print(table)


def export_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    exporter: str = "dynamo",
    opset: int = 18,
    tolerance: float = 1e-4,
    parity_batch: int = 4,
    parity_images: str | Path | None = None,
    name: str = "model",
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``ckpt`` to ``out_dir/<name>.onnx`` / ``<name>.torchscript.pt`` (+ ``.json``); check parity.

    Parity inputs: ``parity_batch`` seeded random images plus, with ``parity_images``, every image of that
    folder preprocessed exactly as :mod:`madd.deploy.predict` does (up to 32).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise MaddConfigError(f"export formats {bad} are unknown; choose from {list(FORMATS)}")
    module = load_module(ckpt)
    config = module.run_config
    shape = input_shape(config.get("data"))  # what the model was trained on
    model = deploy_model(module, shape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = torch.rand(parity_batch, *shape, generator=torch.Generator().manual_seed(seed))
    if parity_images:
        ds = image_dataset(list_images(parity_images)[:32], shape)
        images = torch.cat([images, torch.stack([ds[i]["image"] for i in range(len(ds))])])
    results: dict[str, Any] = {"parity": []}
    targets = {"onnx": (f"{name}.onnx", export_onnx, run_onnx),
               "torchscript": (f"{name}.torchscript.pt", export_torchscript, run_torchscript)}
    for fmt in formats:
        file, export_fn, runner = targets[fmt]
        path = out / file
        if fmt == "onnx":
            export_fn(model, path, shape, exporter, opset)
        else:
            export_fn(model, path, shape)
        rows = parity(model, runner, path, images, tolerance)
        results[fmt] = str(path)
        results["parity"].extend(rows)
        meta = {
            "format": fmt, "file": file, "source_checkpoint": str(Path(ckpt).resolve()),
            "exporter": exporter if fmt == "onnx" else "torch.jit.trace", "opset": opset if fmt == "onnx" else None,
            "input": {"name": "image", "shape": ["batch", *shape], "dtype": "float32", "range": [0.0, 1.0]},
            "outputs": output_names(model), "class_names": list(module.class_names),
            "normal_index": module.normal_index, "pixel_threshold": float(getattr(module, "pixel_threshold", 0.5)),
            "parity": rows,
        }
        (out / f"{file}.json").write_text(json.dumps(meta, indent=2))
    print_parity(results["parity"])
    failed = [r for r in results["parity"] if not r["ok"]]
    if failed:
        raise ExportParityError(
            "exported outputs differ from PyTorch beyond the tolerance: "
            + ", ".join(f"{r['file']}:{r['output']} {r['max_abs_diff']:.2e} > {r['tolerance']:.0e}" for r in failed)
            + "; try exporter=legacy or another opset, or raise tolerance if the difference is numerical noise"
        )
    return results
