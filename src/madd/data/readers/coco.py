"""Reader for COCO instance-segmentation JSON (polygon segmentations)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madd.data.image_io import image_size
from madd.data.readers._common import (
    PathArg,
    clip01,
    listing,
    polygon_area,
    rect_polygon,
    require_dir,
    require_file,
    resolve,
)
from madd.data.records import DatasetIndex, Record
from madd.errors import DataError


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read COCO annotation file '{path}' ({exc}): fix or re-export it.") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"'{path}' is not a COCO annotation file (no 'images' list): point annotation_json at one.")
    return data


def read_coco(
    images_dir: PathArg,
    annotation_json: PathArg,
    normal_name: str = "good",
    class_names: Sequence[str] | None = None,
    root: PathArg | None = None,
) -> DatasetIndex:
    """List images of a COCO JSON file with polygon segmentations, boxes and an image-level label.

    Polygons (pixel coordinates) are normalised by the image's ``width``/``height`` from the JSON (read
    from the image header when absent). An annotation with an empty ``segmentation`` contributes its
    ``bbox`` as a rectangle polygon. RLE segmentations are not supported (DataError). Every record gets
    a ``polygons`` list, ``[]`` (empty mask) for images without annotations, which are ``normal_name``.

    The image-level label is the category of the largest annotation (``area``, else ``bbox`` area).

    Args:
        images_dir: folder that ``file_name`` entries are relative to.
        annotation_json: the COCO JSON file.
        normal_name: class of images without annotations.
        class_names: classes in label order; must contain every used category name and ``normal_name``
            if any image is unannotated. ``None`` = ``[normal_name]`` + category names in category-id order
            (the normal class is always included so that train/val files give the same label indices).
        root: optional base folder for relative ``images_dir``/``annotation_json``.

    Raises:
        DataError: missing folder/file, malformed JSON, RLE masks, unknown categories, missing images, or
            no images.
    """
    img_dir = require_dir(resolve(Path(images_dir), root), "Image folder")
    json_path = require_file(resolve(Path(annotation_json), root), "COCO annotation file")
    data = _load_json(json_path)

    try:
        categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"'{json_path}': every category needs an 'id' and a 'name'. Fix the file.") from None
    if class_names is None:
        names = [normal_name] + [categories[k] for k in sorted(categories) if categories[k] != normal_name]
    else:
        names = [str(c) for c in class_names]
    index = {n: i for i, n in enumerate(names)}

    anns_by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        anns_by_image.setdefault(ann.get("image_id"), []).append(ann)

    records: list[Record] = []
    missing: list[str] = []
    problems: list[str] = []
    for img in sorted(data["images"], key=lambda im: str(im.get("file_name", ""))):
        if "file_name" not in img or "id" not in img:
            problems.append(f"image entry without 'file_name'/'id': {img}")
            continue
        path = img_dir / str(img["file_name"])
        if not path.is_file():
            missing.append(str(path))
            continue
        width, height = float(img.get("width") or 0), float(img.get("height") or 0)
        if width <= 0 or height <= 0:
            width, height = (float(v) for v in image_size(path))

        polygons: list[list[float]] = []
        boxes: list[tuple[int, float, float, float, float]] = []
        best: tuple[float, int] | None = None  # (area, label) of the largest annotation so far
        for ann in anns_by_image.get(img["id"], []):
            cat = categories.get(ann.get("category_id"))
            if cat is None or cat not in index:
                problems.append(f"{img['file_name']}: category {cat or ann.get('category_id')!r} not in {names}")
                continue
            label = index[cat]
            seg = ann.get("segmentation") or []
            if isinstance(seg, dict):
                raise DataError(
                    f"'{json_path}': annotation {ann.get('id')} of '{img['file_name']}' is RLE-encoded, which is "
                    "unsupported: convert RLE masks to polygons (or to mask files and use the image_mask reader)."
                )
            bx, by, bw, bh = (float(v) for v in ann.get("bbox") or (0, 0, 0, 0))
            xs = [float(v) for p in seg for v in p[0::2]] + [bx, bx + bw]
            ys = [float(v) for p in seg for v in p[1::2]] + [by, by + bh]
            if min(xs + ys) < 0 or max(xs) > width or max(ys) > height:
                # clamping would silently move the outline: a wrong width/height or a broken export
                problems.append(f"{img['file_name']}: annotation {ann.get('id')} has coordinates outside the "
                                f"{width:g}x{height:g} image (x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g})")
                continue
            ann_polys = [
                [clip01(float(v) / (width if i % 2 == 0 else height)) for i, v in enumerate(p)]
                for p in seg
                if len(p) >= 6
            ]
            if ann_polys and bw <= 0:  # bbox missing: take the polygons' extents
                xs = [v for p in ann_polys for v in p[0::2]]
                ys = [v for p in ann_polys for v in p[1::2]]
                box = (min(xs), min(ys), max(xs), max(ys))
            else:
                box = (clip01(bx / width), clip01(by / height), clip01((bx + bw) / width), clip01((by + bh) / height))
            if not ann_polys and box[2] > box[0] and box[3] > box[1]:
                ann_polys = [rect_polygon(*box)]
            if not ann_polys:
                problems.append(f"{img['file_name']}: annotation {ann.get('id')} has neither polygon nor bbox")
                continue
            polygons.extend(ann_polys)
            boxes.append((label, *box))
            area = float(ann.get("area") or 0) or sum(polygon_area(p) for p in ann_polys) * width * height
            if best is None or area > best[0]:
                best = (area, label)
        if best is None:
            if normal_name not in index:
                problems.append(f"{img['file_name']}: no annotations but normal_name '{normal_name}' not in {names}")
                continue
            best = (0.0, index[normal_name])
        records.append(Record(path=str(path), label=best[1], polygons=polygons, boxes=boxes))

    if missing:
        raise DataError(
            f"{len(missing)} image(s) listed in '{json_path}' do not exist:{listing(missing)}\n"
            "Fix images_dir or remove them from the JSON."
        )
    if problems:
        raise DataError(f"Problems in COCO file '{json_path}':{listing(problems)}\nFix the file or class_names.")
    if not records:
        raise DataError(f"COCO file '{json_path}' lists no images: point annotation_json at a non-empty file.")
    base = resolve(Path(root), None) if root is not None else img_dir
    return DatasetIndex(records=records, class_names=names, root=str(base))
