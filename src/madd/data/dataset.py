"""The torch Dataset over :class:`~madd.data.records.Record` lists, and its collate function.

A sample is a dict (the same keys for every reader, so models never branch on the dataset):

* ``image``: float32 ``(C, H, W)`` in [0, 1], resized to ``image_size``; not normalised (models own
  their normalisation so exported models take raw [0, 1] pixels);
* ``label``: int64 class index;
* ``mask``: float32 ``(1, H, W)`` in {0, 1}; all zeros when the image has no defect pixels;
* ``has_mask``: whether ``mask`` is ground truth (False for datasets with image labels only);
* ``boxes``: float32 ``(n, 5)`` rows ``(class, x1, y1, x2, y2)`` in resized pixel coordinates; from the
  annotation when it has boxes, else from the connected components of the mask;
* ``index``: position in the dataset (for diagnostics and hidden-label lookups);
* ``reference``: only for reference/inspected pairs: the defect-free reference image, like ``image``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from madd.data.image_io import load_image, load_mask, rasterize_polygons
from madd.data.records import Record


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``data.image_size`` as ``(H, W)``: one integer is a square, ``[H, W]`` keeps the aspect ratio."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def input_shape(data: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images a data config decodes (``data.channels``, ``data.image_size``), the one rule every
    consumer of a run's input size uses (export, predict, cost, checkpoint rebuilding, pruning reports). A key that
    is absent takes the data module's default (3 channels, 128 px)."""
    data = data or {}
    return int(data.get("channels", 3)), *image_hw(data.get("image_size", 128))


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8 -> float32 ``(C, H, W)`` in [0, 1] (a writable copy)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def boxes_from_mask(mask: np.ndarray, label: int) -> np.ndarray:
    """Bounding boxes ``(label, x1, y1, x2, y2)`` of the 8-connected components of a boolean mask."""
    components, n = ndimage.label(mask, structure=np.ones((3, 3)))
    rows = []
    for sl in ndimage.find_objects(components):
        ys, xs = sl
        rows.append((label, xs.start, ys.start, xs.stop, ys.stop))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


class DefectDataset(Dataset):
    """Decodes, resizes and packs records; optionally keeps decoded samples in memory.

    Args:
        records: what a reader listed.
        image_size: ``int`` or ``(H, W)`` the images are resized to (bilinear; masks nearest).
        channels: 3 (RGB, grey replicated) or 1.
        cache: keep decoded, resized samples in RAM. Small-sample training revisits the same few images
            every epoch, and decoding dominates a CPU step otherwise.
    """

    def __init__(
        self,
        records: Sequence[Record],
        image_size: int | Sequence[int] = 128,
        channels: int = 3,
        cache: bool = True,
    ) -> None:
        self.records = list(records)
        self.size_hw = image_hw(image_size)
        self.channels = channels
        self.cache = cache
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    def _decode(self, index: int) -> dict:
        rec = self.records[index]
        img = load_image(rec.path, channels=self.channels)
        h0, w0 = img.shape[:2]
        h, w = self.size_hw
        img = self._resize(img)
        if rec.mask_path is not None:
            mask = load_mask(rec.mask_path, size=(w0, h0))
        elif rec.polygons is not None:
            mask = rasterize_polygons(rec.polygons, w0, h0)
        else:
            mask = np.zeros((h0, w0), dtype=bool)
        if mask.shape != (h, w):
            # box filter + "any coverage": thin defects (1-px cracks) stay connected when downscaled,
            # where nearest-neighbour would break them into pieces (and into several boxes)
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BOX)) > 0
        if rec.boxes:
            b = np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 5)
            b[:, [1, 3]] *= w
            b[:, [2, 4]] *= h
        else:
            b = boxes_from_mask(mask, rec.label)
        sample = {
            "image": _to_tensor(img),
            "label": torch.tensor(rec.label, dtype=torch.long),
            "mask": torch.from_numpy(mask).float().unsqueeze(0),
            "has_mask": torch.tensor(rec.has_localisation),
            "boxes": torch.from_numpy(b),
            "index": torch.tensor(index, dtype=torch.long),
        }
        if rec.reference_path is not None:
            sample["reference"] = _to_tensor(self._resize(load_image(rec.reference_path, channels=self.channels)))
        return sample

    def _resize(self, img: np.ndarray) -> np.ndarray:
        """Bilinear resize of an ``(H, W, C)`` uint8 array to ``image_size`` (a no-op at that size)."""
        h, w = self.size_hw
        if img.shape[:2] == (h, w):
            return img
        mode = "L" if img.shape[2] == 1 else "RGB"
        out = np.asarray(Image.fromarray(img.squeeze(-1) if mode == "L" else img, mode).resize((w, h), Image.BILINEAR))
        return out.reshape(h, w, -1)

    def __getitem__(self, index: int) -> dict:
        if not self.cache:
            return self._decode(index)
        if index not in self._cache:
            self._cache[index] = self._decode(index)
        return self._cache[index]


def collate(samples: list[dict]) -> dict:
    """Stack fixed-size fields; keep ``boxes`` as a list (their count varies per image)."""
    out = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "boxes"}
    out["boxes"] = [s["boxes"] for s in samples]
    return out
