"""Reader for YOLO / ultralytics label files: boxes (detect) and polygons (segment)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from madd.data.readers._common import (
    IMAGE_EXTENSIONS,
    PathArg,
    as_path_list,
    box_from_polygon,
    check_unique_stems,
    clip01,
    list_images,
    listing,
    polygon_area,
    rect_polygon,
    require_dir,
    resolve,
)
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.errors import DataError

log = logging.getLogger(__name__)

# One parsed label line: (yolo class id, box x1 y1 x2 y2, polygon or None, area).
_Ann = tuple[int, tuple[float, float, float, float], list[float] | None, float]


def _labels_dir_for(images_dir: Path) -> Path:
    """Ultralytics convention: ``.../images/train`` -> ``.../labels/train`` (last ``images`` component)."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise DataError(
        f"Cannot derive the label folder of '{images_dir}' (no 'images' path component): set labels_dirs."
    )


def _parse_label_file(path: Path) -> list[_Ann]:
    """Parse one label file. ``cls cx cy w h`` is a box; ``cls x1 y1 x2 y2 x3 y3 ...`` is a polygon."""
    anns: list[_Ann] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read YOLO label file '{path}' ({exc}): re-export or remove the file.") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls_f, *vals = (float(f) for f in fields)
        except ValueError:
            raise DataError(
                f"YOLO label '{path}' line {lineno} is not numeric: '{line.strip()}'. Fix the file."
            ) from None
        if cls_f != int(cls_f) or cls_f < 0:
            raise DataError(f"YOLO label '{path}' line {lineno}: class id {fields[0]} is not a non-negative integer.")
        cls = int(cls_f)
        outside = [f for f, v in zip(fields[1:], vals) if not 0.0 <= v <= 1.0]
        if outside:
            # ultralytics' own label check refuses these too ("non-normalized or out of bounds coordinates");
            # clamping them would silently move the box
            raise DataError(
                f"YOLO label '{path}' line {lineno}: coordinate(s) {outside} are outside [0, 1]; YOLO coordinates "
                "are normalised by the image size. Fix the line (or use reader: files with coordinates: pixel)."
            )
        if len(vals) == 4:
            cx, cy, w, h = vals
            box = (clip01(cx - w / 2), clip01(cy - h / 2), clip01(cx + w / 2), clip01(cy + h / 2))
            anns.append((cls, box, None, (box[2] - box[0]) * (box[3] - box[1])))
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            poly = list(vals)  # already checked to lie in [0, 1]
            anns.append((cls, box_from_polygon(poly), poly, polygon_area(poly)))
        else:
            raise DataError(
                f"YOLO label '{path}' line {lineno} has {len(vals)} coordinates: expected 4 (cx cy w h) or an "
                "even number >= 6 (polygon x1 y1 x2 y2 x3 y3 ...). Fix the file."
            )
    return anns


def read_yolo(
    images_dirs: PathArg | Sequence[PathArg],
    labels_dirs: PathArg | Sequence[PathArg] | None = None,
    class_names: Sequence[str] = ("good", "defect"),
    normal_name: str | None = "good",
    yolo_class_offset: int | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    root: PathArg | None = None,
) -> DatasetIndex:
    """List images with YOLO txt labels (ultralytics detect or segment format).

    ``images_dirs[i]`` is paired with ``labels_dirs[i]`` (``None``: derived the ultralytics way,
    ``images/train`` -> ``labels/train``), each image with the ``.txt`` of the same stem. Coordinates are
    already normalised. A polygon line also yields its bounding box. An empty or missing label file
    means a defect-free image (``normal_name``).

    Class mapping: YOLO class ids count defect classes only, while ``class_names`` usually starts with
    the normal class. With ``yolo_class_offset=None`` (default) YOLO id ``k`` is the k-th class of
    ``class_names`` other than ``normal_name`` -- for ``["good", "defect"]`` id 0 -> ``"defect"`` (label 1).
    An integer offset maps id ``k`` to ``class_names[k + offset]`` explicitly.

    The image-level label is the class of the largest annotation (polygon area, or box area for box
    lines). When any file holds polygons the dataset is treated as segmentation: every record gets a
    ``polygons`` list (box lines become rectangles, normal images get ``[]`` = empty mask); a box-only
    dataset leaves ``polygons`` ``None``.

    Args:
        images_dirs: one folder or a list of folders of images.
        labels_dirs: matching label folder(s), or ``None`` to derive them.
        class_names: classes in label order.
        normal_name: class for images without annotations; ``None`` makes such images an error.
        yolo_class_offset: see above.
        extensions: image file extensions.
        root: optional base folder for relative folders (e.g. the ultralytics dataset ``path``).

    Raises:
        DataError: missing folders, malformed lines, class ids outside ``class_names``, unlabelled images
            without ``normal_name``, or no images at all.
    """
    names = [str(c) for c in class_names]
    if not names or len(set(names)) != len(names):
        raise DataError(f"class_names must be a non-empty list of distinct names, got {names}.")
    if normal_name is not None and normal_name not in names:
        raise DataError(f"normal_name '{normal_name}' is not in class_names {names}: add it or unset normal_name.")
    if yolo_class_offset is None:
        id_to_label = [i for i, n in enumerate(names) if n != normal_name]
    elif yolo_class_offset >= 0:
        id_to_label = list(range(yolo_class_offset, len(names)))
    else:
        raise DataError(f"yolo_class_offset must be >= 0 or unset, got {yolo_class_offset}.")

    img_dirs = [require_dir(resolve(p, root), "Image folder") for p in as_path_list(images_dirs, "images_dirs")]
    if labels_dirs is None:
        lbl_paths = [_labels_dir_for(d) for d in img_dirs]
    else:
        lbl_paths = [resolve(p, root) for p in as_path_list(labels_dirs, "labels_dirs")]
    lbl_dirs = [require_dir(p, "Label folder") for p in lbl_paths]
    if not img_dirs or len(img_dirs) != len(lbl_dirs):
        raise DataError(
            f"read_yolo needs as many labels_dirs as images_dirs (paired in order), got {len(img_dirs)} image "
            f"and {len(lbl_dirs)} label folder(s): fix the data config."
        )

    parsed: list[tuple[Path, list[_Ann]]] = []
    report = ReadReport()
    unmatched: list[Path] = []
    matched = 0
    for img_dir, lbl_dir in zip(img_dirs, lbl_dirs):
        images = list_images(img_dir, extensions, report=report)
        check_unique_stems(images, str(img_dir))
        for img in images:
            label_file = lbl_dir / f"{img.stem}.txt"
            matched += label_file.is_file()
            parsed.append((img, _parse_label_file(label_file) if label_file.is_file() else []))
        stems = {p.stem for p in images}
        unmatched += sorted(p for p in lbl_dir.glob("*.txt") if p.stem not in stems and not p.name.startswith("."))
    if not parsed:
        raise DataError(f"No images found in {[str(d) for d in img_dirs]}: fix images_dirs.")
    if unmatched and not matched:
        raise DataError(
            f"None of the {len(unmatched)} YOLO label file(s) in {[str(d) for d in lbl_dirs]} has an image of the "
            f"same stem in {[str(d) for d in img_dirs]}, e.g.{listing(unmatched, 5)}\nFix labels_dirs / images_dirs."
        )
    if unmatched:
        log.warning("%d YOLO label file(s) match no image and are ignored, e.g. %s", len(unmatched), unmatched[0])
        report.unmatched["label files"].extend(str(p) for p in unmatched)

    bad_ids = sorted({(str(img), a[0]) for img, anns in parsed for a in anns if not 0 <= a[0] < len(id_to_label)})
    if bad_ids:
        raise DataError(
            f"YOLO class id(s) outside class_names {names} (id k -> {[names[i] for i in id_to_label]}[k]):"
            f"{listing([f'{p}: id {k}' for p, k in bad_ids])}\nFix class_names / yolo_class_offset or the labels."
        )

    segmentation = any(a[2] is not None for _, anns in parsed for a in anns)
    records: list[Record] = []
    unlabelled: list[str] = []
    for img, anns in parsed:
        if not anns:
            if normal_name is None:
                unlabelled.append(str(img))
                continue
            records.append(Record(path=str(img), label=names.index(normal_name), polygons=[] if segmentation else None))
            continue
        boxes = [(id_to_label[a[0]], *a[1]) for a in anns]
        label = id_to_label[max(anns, key=lambda a: a[3])[0]]
        polygons = [a[2] if a[2] is not None else rect_polygon(*a[1]) for a in anns] if segmentation else None
        records.append(Record(path=str(img), label=label, polygons=polygons, boxes=boxes))
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} image(s) have no YOLO labels and normal_name is unset:{listing(unlabelled)}\n"
            "Set normal_name to a defect-free class, or add the labels."
        )
    base = resolve(Path(root), None) if root is not None else img_dirs[0].parent
    return DatasetIndex(records=records, class_names=names, root=str(base), report=report)
