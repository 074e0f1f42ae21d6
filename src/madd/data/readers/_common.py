"""Helpers shared by the readers: path resolution, image listing, error formatting."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from madd.data.records import ReadReport
from madd.errors import DataError

#: Default image extensions (case-insensitive). Listing is by extension, decoding is by content, so a
#: ``.png`` holding JPEG bytes is listed *and* decodes.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

MAX_LISTED = 20

PathArg = str | os.PathLike


def as_path_list(value: PathArg | Sequence[PathArg] | None, what: str) -> list[Path]:
    """Accept one path or a list of paths (a Hydra ``ListConfig`` works too) and return ``list[Path]``."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    try:
        return [Path(v) for v in value]
    except TypeError:
        raise DataError(f"{what} must be a path or a list of paths, got {value!r}: fix the data config.") from None


def resolve(path: Path, root: PathArg | None) -> Path:
    """Join a relative ``path`` onto ``root`` (when given) and make it absolute.

    Absolute paths keep records valid if the working directory changes later (Hydra run dirs).
    """
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    return Path(os.path.normpath(path.expanduser().absolute()))  # no '..': one file, one path string


def require_dir(path: Path, what: str) -> Path:
    """Raise a DataError naming ``path`` when it is not an existing directory."""
    if not path.exists():
        raise DataError(f"{what} '{path}' does not exist: fix the path in the data config.")
    if not path.is_dir():
        raise DataError(f"{what} '{path}' is not a directory: point the data config at the folder.")
    return path


def require_file(path: Path, what: str) -> Path:
    """Raise a DataError naming ``path`` when it is not an existing file."""
    if not path.is_file():
        raise DataError(f"{what} '{path}' does not exist or is not a file: fix the path in the data config.")
    return path


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """``["PNG", ".jpg"]`` -> ``(".png", ".jpg")``; an empty list is a config error."""
    exts = tuple(("." + e.lstrip(".")).lower() for e in extensions)
    if not exts:
        raise DataError("extensions is empty: list the image file extensions to read, e.g. ['.png', '.jpg'].")
    return exts


def list_images(
    folder: Path,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    pattern: str | None = None,
    report: ReadReport | None = None,
) -> list[Path]:
    """Image files in ``folder``, sorted by path; hidden files and folders skipped.

    Args:
        folder: where to look.
        extensions: image extensions (case-insensitive); other files are not images.
        pattern: a glob relative to ``folder`` (``"**/*"`` searches every depth, ``"Imgs/*.jpg"`` one
            sub-folder); ``None`` lists the files directly inside ``folder`` only.
        report: when given, files skipped for their extension and sub-folders not searched are recorded
            in it, so the pre-training summary can say what was left out and why.
    """
    exts = normalise_extensions(extensions)
    if pattern is None:
        candidates = list(folder.iterdir())
        if report is not None:
            for p in candidates:
                if p.is_dir() and not p.name.startswith("."):
                    report.ignore("sub-folder not searched (set recursive: true or a pattern)", p)
    else:
        candidates = list(folder.glob(pattern))
    out = []
    for p in candidates:
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.suffix.lower() in exts:
            out.append(p)
        elif report is not None:
            report.ignore(f"extension not in {list(exts)}", p)
    return sorted(out)


def listing(items: Sequence[object], limit: int = MAX_LISTED) -> str:
    """Format up to ``limit`` items as an indented list, with a count of the rest."""
    shown = "\n  - ".join(str(i) for i in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  - {shown}{more}"


def polygon_area(poly: Sequence[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, x2, y2, ...]`` polygon."""
    xs, ys = poly[0::2], poly[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


def clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def box_from_polygon(poly: Sequence[float]) -> tuple[float, float, float, float]:
    """Axis-aligned extents ``(x1, y1, x2, y2)`` of a flat polygon, clipped to [0, 1]."""
    xs, ys = poly[0::2], poly[1::2]
    return clip01(min(xs)), clip01(min(ys)), clip01(max(xs)), clip01(max(ys))


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """A box as a 4-point polygon, so box-only annotations still rasterise into a mask."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def check_unique_stems(images: Sequence[Path], where: str) -> None:
    """Stem-based pairing is ambiguous when two images share a stem (``a.png`` and ``a.jpg``)."""
    seen: dict[str, Path] = {}
    dups: list[str] = []
    for p in images:
        if p.stem in seen:
            dups.append(f"{seen[p.stem].name} / {p.name}")
        else:
            seen[p.stem] = p
    if dups:
        raise DataError(
            f"Images in {where} share a file stem, so annotations cannot be paired unambiguously:"
            f"{listing(dups)}\nRename or remove the duplicates."
        )
