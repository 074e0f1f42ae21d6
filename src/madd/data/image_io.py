"""Image and mask decoding: the only place in the data layer that turns files into pixels.

Design rules:

* Files are decoded **by content**, never by extension (``PIL.Image.open`` sniffs the header), so a
  ``.png`` that really holds JPEG bytes (common in X-SDD) loads fine.
* Every image mode is converted explicitly to ``uint8`` (see :func:`load_image`) instead of relying on
  ``np.asarray`` of whatever mode PIL happened to pick; 16-bit and float data are *scaled*, not clipped.
* Every failure is a :class:`~madd.errors.DataError` naming the file and the fix, so a corrupt image
  deep inside a dataset is reported as one clear line instead of a PIL traceback from a worker process.
* EXIF orientation is deliberately **not** applied: masks, polygons and boxes are annotated on the
  stored pixel grid, and industrial cameras do not rotate via EXIF.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from madd.data.records import Record
from madd.errors import DataError, MaddConfigError

_FIX = "re-export or remove the file"
# Modes PIL can turn into RGB/L itself without losing meaning (palette, colour spaces, 1-bit).
_PIL_CONVERTIBLE = {"1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"}
_MAX_LISTED = 20

PathLike = str | os.PathLike


def _open_and_load(path: PathLike) -> Image.Image:
    """``Image.open`` + full decode of the first frame, closing the file again if decoding fails."""
    img: Image.Image | None = None
    try:
        img = Image.open(path)
        # Multi-frame files (TIFF stacks, animated PNG/GIF): the first frame is the image.
        img.seek(0)
        img.load()  # Image.open only reads the header; load() decodes and catches truncation.
    except BaseException:
        if img is not None:
            img.close()  # do not leak the file handle of a broken file
        raise
    return img


def _open_loaded(path: PathLike, what: str) -> Image.Image:
    """Open by content and force a full decode, so truncated/corrupt files fail here, with the path."""
    try:
        return _open_and_load(path)
    except FileNotFoundError:
        raise DataError(f"{what} '{path}' does not exist: fix the path or remove the entry.") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError; truncated JPEG/PNG raise OSError; bad headers
        # sometimes raise SyntaxError/ValueError inside plugins.
        raise DataError(f"Cannot decode {what.lower()} '{path}' ({type(exc).__name__}: {exc}): {_FIX}.") from None


def _to_uint8_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to a uint8 array, HxW (grey) or HxWx3 (colour).

    * ``L``/``RGB``: as stored.
    * ``LA``/``RGBA``/``PA``/``RGBX``: the alpha channel is **dropped** (not composited): industrial
      exports carry an opaque or meaningless alpha, and compositing on black would invent dark regions.
    * ``P``/``1``/``CMYK``/``YCbCr``/``LAB``/``HSV``: converted by PIL (palette lookup, colour transform).
    * ``I;16*`` (16-bit): scaled by 255/65535 (``/257``) and rounded, so the full dynamic range is kept.
    * ``I`` (32-bit int): values that fit in [0, 65535] are treated as 16-bit data (PIL opens some
      16-bit files as ``I``); otherwise scaled by the int32 maximum, negatives clipped to 0.
    * ``F`` (float): values within [0, 1] are scaled by 255; any other range is min-max normalised
      per image (there is no dtype maximum for floats); NaN/inf become 0.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img, dtype=np.uint8)
    if mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.uint8)
    if mode == "RGBA":
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # RGBA->RGB in PIL drops alpha
    if mode in _PIL_CONVERTIBLE:
        if mode in ("1", "La"):
            return np.asarray(img.convert("L"), dtype=np.uint8)
        if mode in ("P", "PA"):
            # A palette may be grey or colour: RGB is exact either way (grey is derived later if asked).
            # Via RGBA, so a palette with transparency converts without PIL's warning; alpha is dropped.
            img = img.convert("RGBA")
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float64)
        return np.round(arr / 257.0).astype(np.uint8)
    if mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return np.round(arr / 257.0).astype(np.uint8)
        return np.round(np.clip(arr, 0, None) / (2**31 - 1) * 255.0).astype(np.uint8)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return np.round(arr * 255.0).astype(np.uint8)
        span = hi - lo
        if span <= 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.round((arr - lo) / span * 255.0).astype(np.uint8)
    # Anything exotic left (e.g. "I;32", "BGR;24"): let PIL try, it knows more modes than we list.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, the same weights as PIL's ``convert("L")``."""
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.round(grey).astype(np.uint8)


def load_image(path: PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image file to a ``uint8`` array of shape ``(H, W, channels)``.

    Args:
        path: image file; its format is detected from the content, not the extension.
        channels: 3 for RGB (grey images are replicated to three channels), 1 for grey (colour images
            are converted with ITU-R 601-2 luma weights).

    Raises:
        DataError: the file is missing, truncated, corrupt or not an image (message names the file).
        MaddConfigError: ``channels`` is not 1 or 3.

    See :func:`_to_uint8_array` for how each PIL mode (alpha, palette, 16-bit, float, CMYK) is handled.
    """
    if channels not in (1, 3):
        raise MaddConfigError(f"channels must be 1 or 3, got {channels!r}: fix the data config.")
    with _open_loaded(path, "Image") as img:
        try:
            arr = _to_uint8_array(img)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Cannot convert image '{path}' (mode {img.mode}) to 8-bit: {exc}: {_FIX}."
            ) from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 1 and arr.shape[2] == 3:
        arr = _grey_from_rgb(arr.astype(np.float64))[..., None]
    return np.ascontiguousarray(arr)


def load_mask(path: PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a pixel mask to a boolean ``(H, W)`` array; foreground = value >= 128.

    Grey masks are thresholded directly (16-bit masks are scaled to 8 bit first). Colour masks use the
    **maximum over channels** rather than luma, so a pure red annotation (255, 0, 0) on black is
    foreground (its luma, 76, would not be). Alpha is ignored.

    Args:
        path: mask file.
        size: expected ``(width, height)`` (the image's size); a different mask size is an error.

    Raises:
        DataError: unreadable mask, size mismatch, or a 0/1-valued mask (which would silently be empty
            under the >= 128 rule).
    """
    with _open_loaded(path, "Mask") as img:
        if size is not None and tuple(img.size) != tuple(size):
            raise DataError(
                f"Mask '{path}' is {img.size[0]}x{img.size[1]} (WxH) but its image is "
                f"{size[0]}x{size[1]}: re-export the mask at the image size or remove the pair."
            )
        arr = _to_uint8_array(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.size and int(arr.max()) == 1:
        # Label-map style masks (0 = background, 1 = defect) are common and would read as empty.
        raise DataError(
            f"Mask '{path}' only holds values 0 and 1, but foreground must be >= 128: "
            "re-export it with defects as 255 (e.g. multiply by 255)."
        )
    return arr >= 128


def rasterize_polygons(
    polygons_normalised: Iterable[Sequence[float]] | None, width: int, height: int
) -> np.ndarray:
    """Draw normalised polygons (flat ``[x1, y1, x2, y2, ...]`` in [0, 1]) into a bool ``(H, W)`` mask.

    Polygons with fewer than three points are skipped (they enclose no area). ``None`` or an empty list
    gives an all-background mask (a known-normal image).
    """
    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons_normalised or ():
        coords = [float(v) for v in poly]
        if len(coords) < 6:
            continue
        points = [(coords[i] * width, coords[i + 1] * height) for i in range(0, len(coords) - 1, 2)]
        # outline too, so hairline defects (thin scratches) still cover their pixels.
        draw.polygon(points, fill=255, outline=255)
    return np.asarray(canvas) >= 128


def _check_record(record: Record, channels: int) -> str | None:
    """Return a one-line problem description for one record, or ``None`` when it decodes cleanly."""
    try:
        img = load_image(record.path, channels)
        if record.mask_path is not None:
            load_mask(record.mask_path, size=(img.shape[1], img.shape[0]))
        if record.reference_path is not None:
            ref = load_image(record.reference_path, channels)
            if ref.shape[:2] != img.shape[:2]:
                return (f"Reference image '{record.reference_path}' is {ref.shape[1]}x{ref.shape[0]} (WxH) but its "
                        f"image '{record.path}' is {img.shape[1]}x{img.shape[0]}: pair images of one size.")
    except DataError as exc:
        return str(exc)
    return None


def verify_records(records: Sequence[Record], channels: int = 3, num_workers: int | None = None) -> None:
    """Decode every image (and mask) once before training, and report **all** problems together.

    Catches truncated/corrupt images, unreadable masks and mask/image size mismatches up front, instead
    of one at a time from inside a DataLoader worker hours into a run.

    Args:
        records: the records to check.
        channels: as for :func:`load_image`.
        num_workers: decoding threads (PIL releases the GIL while decoding); default ``min(8, cpus)``.

    Raises:
        DataError: one error listing the first 20 problems and how many there are in total.
    """
    if channels not in (1, 3):
        raise MaddConfigError(f"channels must be 1 or 3, got {channels!r}: fix the data config.")
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda r: _check_record(r, channels), records))
    problems = [p for p in results if p is not None]
    if problems:
        listed = "\n  - ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataError(
            f"{len(problems)} of {len(records)} dataset files are unusable:\n  - {listed}{more}\n"
            "Re-export or remove these files (or their masks) and run again."
        )


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header only (no decode); used by readers for normalisation."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"Image '{path}' does not exist: fix the path or remove the entry.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"Cannot read image header of '{Path(path)}' ({exc}): {_FIX}.") from None
