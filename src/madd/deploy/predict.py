"""Predict a folder of images with a checkpoint (PyTorch) or an exported ONNX model (onnxruntime).

Images are decoded and resized by the training data code (:class:`madd.data.dataset.DefectDataset`, which
uses :func:`madd.data.image_io.load_image`), so predictions see exactly the pixels a model was trained
and validated on; preprocessing drift between training and deployment code is a known source of export
mismatches in other tools.

Outputs in ``output_dir``:

* ``predictions.csv``: ``file, class, score, defect`` (predicted class, its probability, and whether it is
  not the normal class; with no normal class every class is a defect type and the flag is always true),
  one ``p_<class>`` column per class, and, for models with an anomaly map, ``map_max`` and the ``boxes``
  (``x1 y1 x2 y2`` in original-image pixels, ``;``-separated) of the map thresholded at ``threshold``;
* ``overlays/<file name>.png`` (models with an anomaly map): the image with the map as a heat map and the boxes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from madd.checkpoint import load_module
from madd.data.dataset import boxes_from_mask, collate, input_shape
from madd.data.image_io import image_size, load_image
from madd.deploy.export import deploy_model
from madd.deploy.images import image_dataset, list_images
from madd.errors import MaddConfigError
from madd.utils.optional import require

log = logging.getLogger(__name__)


class TorchPredictor:
    """A checkpoint loaded safely (:func:`madd.checkpoint.load_module`)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        module = load_module(path)
        self.shape = input_shape(module.run_config.get("data"))
        self.device = torch.device(device)
        self.model = deploy_model(module, self.shape).to(self.device)
        self.has_map = self.model.has_map
        self.class_names = list(module.class_names)
        self.normal_index = module.normal_index
        self.pixel_threshold = float(getattr(module, "pixel_threshold", 0.5))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.model(images.to(self.device))
        probs, amap = (out if self.has_map else (out, None))
        return probs.cpu().numpy(), None if amap is None else amap.cpu().numpy()


class OnnxPredictor:
    """An exported ``.onnx`` file run with onnxruntime, described by its ``.onnx.json`` sidecar."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        ort = require("onnxruntime", "onnxruntime", f"predicting with {Path(path).name}")

        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not meta_path.is_file():
            raise MaddConfigError(f"{meta_path} is missing: predict needs the JSON that export.py writes beside the .onnx")
        meta = json.loads(meta_path.read_text())
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.shape = tuple(meta["input"]["shape"][1:])
        self.has_map = "anomaly_map" in meta["outputs"]
        self.class_names = list(meta["class_names"])
        self.normal_index = meta["normal_index"]
        self.pixel_threshold = float(meta["pixel_threshold"])

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(None, {self.session.get_inputs()[0].name: images.numpy()})
        return out[0], (out[1] if self.has_map else None)


def predictor(path: str | Path, device: str = "cpu"):
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxPredictor(path, device)
    if suffix in (".ckpt", ".pt", ".pth"):
        return TorchPredictor(path, device)
    raise MaddConfigError(f"model={path}: expected a .ckpt checkpoint or an exported .onnx file")


def scaled_boxes(amap: np.ndarray, threshold: float, original_wh: tuple[int, int], min_area: int) -> list[list[float]]:
    """Boxes of the map's connected regions above ``threshold``, in original-image pixels."""
    h, w = amap.shape
    boxes = boxes_from_mask(amap >= threshold, 1)[:, 1:]
    sx, sy = original_wh[0] / w, original_wh[1] / h
    return [[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for x1, y1, x2, y2 in boxes if (x2 - x1) * (y2 - y1) >= min_area]


def overlay(path: Path, amap: np.ndarray, boxes: list[list[float]], caption: str, alpha: float = 0.45) -> Image.Image:
    """The original image with the anomaly map (jet colour map) blended in and the boxes drawn."""
    from matplotlib import colormaps

    rgb = load_image(path, channels=3)
    base = Image.fromarray(rgb)
    heat = Image.fromarray((amap * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    colored = (colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    out = Image.blend(base, Image.fromarray(colored), alpha)
    draw = ImageDraw.Draw(out)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 0, 0), width=max(1, min(base.size) // 128))
    draw.text((3, 3), caption, fill=(255, 255, 255))
    return out


def predict_folder(
    model: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 16,
    device: str = "cpu",
    overlays: bool = True,
    threshold: float | None = None,
    min_box_area: int = 4,
) -> pd.DataFrame:
    """Predict every image of ``input_dir``; write ``predictions.csv`` (and overlays); return the table."""
    runner = predictor(model, device)
    files = list_images(input_dir)
    dataset = image_dataset(files, runner.shape)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    threshold = runner.pixel_threshold if threshold is None else float(threshold)
    out = Path(output_dir)
    (out / "overlays" if overlays and runner.has_map else out).mkdir(parents=True, exist_ok=True)
    root = Path(input_dir).expanduser()
    rows, i = [], 0
    for batch in loader:
        probs, maps = runner(batch["image"])
        for b in range(len(probs)):
            path = files[i]
            i += 1
            cls = int(probs[b].argmax())
            row = {"file": str(path.relative_to(root)), "class": runner.class_names[cls], "score": float(probs[b, cls]),
                   "defect": True if runner.normal_index is None else cls != runner.normal_index}
            row.update({f"p_{n}": float(p) for n, p in zip(runner.class_names, probs[b])})
            if maps is not None:
                amap = maps[b, 0]
                boxes = scaled_boxes(amap, threshold, image_size(path), min_box_area)
                row["map_max"] = float(amap.max())
                row["boxes"] = ";".join(" ".join(f"{v:.0f}" for v in box) for box in boxes)
                if overlays:
                    name = row["file"].replace("/", "__")
                    caption = f"{row['class']} {row['score']:.2f}"
                    overlay(path, amap, boxes, caption).save(out / "overlays" / f"{name}.png")
            rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "predictions.csv", index=False)
    log.info("%d predictions written to %s", len(df), out / "predictions.csv")
    return df
