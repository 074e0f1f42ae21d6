"""Parsing box text files: one box per line, ``x1 y1 x2 y2 class`` (or another stated order), pixel or
normalised coordinates, separated by spaces, tabs or commas (DeepPCB, many in-house exports)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from madd.errors import DataError

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
COORDINATES = ("pixel", "normalised")
CLASS_COLUMNS = ("last", "first")
_SEPARATORS = re.compile(r"[,;\s]+")


def check_box_format(box_format: str, coordinates: str, class_column: str) -> None:
    """Refuse unknown values of the ``boxes`` keys, naming the key and the valid values."""
    for key, value, valid in (("boxes.format", box_format, BOX_FORMATS),
                              ("boxes.coordinates", coordinates, COORDINATES),
                              ("boxes.class_column", class_column, CLASS_COLUMNS)):
        if value not in valid:
            raise DataError(f"{key} is '{value}': use one of {list(valid)}.")


def parse_box_file(
    path: Path,
    image_wh: tuple[int, int],
    class_index: Mapping[str, int],
    box_format: str = "xyxy",
    coordinates: str = "pixel",
    class_column: str = "last",
) -> list[tuple[int, float, float, float, float]]:
    """Boxes of one file as ``(class_index, x1, y1, x2, y2)`` normalised to [0, 1].

    Args:
        path: the text file.
        image_wh: the image's ``(width, height)`` (pixel coordinates are checked against it and divided by it).
        class_index: the class field as written in the file -> class index.
        box_format: ``xyxy`` (corners), ``xywh`` (top-left corner + size) or ``cxcywh`` (centre + size).
        coordinates: ``pixel`` or ``normalised`` (divided by the image size already).
        class_column: where the class field is: ``last`` (``x1 y1 x2 y2 class``) or ``first``.

    Raises:
        DataError: naming the file and line, for a line without 5 fields, a non-numeric coordinate, an unknown
            class, or a box outside the image (coordinates are never clamped).
    """
    check_box_format(box_format, coordinates, class_column)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read box file '{path}' ({exc}): re-export or remove it.") from None
    w, h = image_wh
    limit = (1.0, 1.0) if coordinates == "normalised" else (float(w), float(h))
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = [f for f in _SEPARATORS.split(line.strip()) if f]
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(f"Box file '{path}' line {lineno} has {len(fields)} fields, expected 5 "
                            f"({'class ' if class_column == 'first' else ''}{box_format} coordinates"
                            f"{' class' if class_column == 'last' else ''}): '{line.strip()}'. Fix the file.")
        cls, coords = (fields[0], fields[1:]) if class_column == "first" else (fields[4], fields[:4])
        if cls not in class_index:
            raise DataError(f"Box file '{path}' line {lineno}: class '{cls}' is not one of {sorted(class_index)}: "
                            "fix the file, or map it with boxes.class_map.")
        try:
            a, b, c, d = (float(v) for v in coords)
        except ValueError:
            raise DataError(
                f"Box file '{path}' line {lineno}: coordinates {coords} are not numbers. Fix the file."
            ) from None
        if box_format == "xywh":
            a, b, c, d = a, b, a + c, b + d
        elif box_format == "cxcywh":
            a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
        if min(a, b) < 0 or c > limit[0] or d > limit[1] or c <= a or d <= b:
            raise DataError(
                f"Box file '{path}' line {lineno}: box x1={a:g} y1={b:g} x2={c:g} y2={d:g} is empty or outside the "
                f"{'[0, 1] range' if coordinates == 'normalised' else f'{w}x{h} image'} "
                f"(boxes.coordinates: {coordinates}, boxes.format: {box_format}). Fix the line or those keys."
            )
        out.append((class_index[cls], a / limit[0], b / limit[1], c / limit[0], d / limit[1]))
    return out
