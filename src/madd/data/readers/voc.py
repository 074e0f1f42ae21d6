"""Reader for Pascal VOC XML box annotations (NEU-DET and most box-annotated defect sets)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from madd.data.image_io import image_size
from madd.data.readers._common import (
    IMAGE_EXTENSIONS,
    PathArg,
    as_path_list,
    check_unique_stems,
    list_images,
    listing,
    require_dir,
    resolve,
)
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.errors import DataError

log = logging.getLogger(__name__)

_IMAGE_LABEL_RULES = ("largest", "first", "filename")


def _parse_xml(xml_path: Path, image_path: Path) -> list[tuple[str, float, float, float, float]]:
    """Objects of one VOC file as ``(name, x1, y1, x2, y2)`` normalised to [0, 1].

    Coordinates are divided by the XML's ``<size>``; when that is missing or 0 (some exporters write 0),
    the image's own size is read from its header instead.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"Cannot parse VOC annotation '{xml_path}' ({exc}): re-export or remove the file.") from None

    def num(node: ET.Element | None, tag: str) -> float:
        text = node.findtext(tag) if node is not None else None
        try:
            return float(text.strip()) if text and text.strip() else 0.0
        except ValueError:
            raise DataError(
                f"VOC annotation '{xml_path}': <{tag}> is '{text}', not a number: fix or re-export the file."
            ) from None

    size = root.find("size")
    width, height = num(size, "width"), num(size, "height")
    if width <= 0 or height <= 0:
        width, height = (float(v) for v in image_size(image_path))

    objects = []
    for number, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(
                f"VOC annotation '{xml_path}' has an <object> without <name> or <bndbox>: fix or re-export it."
            )
        raw = [num(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if min(raw) < 0 or max(raw[0], raw[2]) > width or max(raw[1], raw[3]) > height:
            raise DataError(
                f"VOC annotation '{xml_path}' object {number} ('{name}'): box {raw} lies outside the "
                f"{width:g}x{height:g} image: fix the box or the <size> (coordinates are pixels)."
            )
        x1, y1, x2, y2 = raw[0] / width, raw[1] / height, raw[2] / width, raw[3] / height
        if x2 <= x1 or y2 <= y1:
            log.warning("Skipping empty box %s in %s", (x1, y1, x2, y2), xml_path)
            continue
        objects.append((name, x1, y1, x2, y2))
    return objects


def read_voc(
    images_dirs: PathArg | Sequence[PathArg],
    annotations_dirs: PathArg | Sequence[PathArg],
    class_names: Sequence[str] | None = None,
    normal_name: str | None = None,
    image_label: str = "largest",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    root: PathArg | None = None,
) -> DatasetIndex:
    """List images with Pascal VOC XML box annotations.

    ``images_dirs[i]`` is paired with ``annotations_dirs[i]`` and each image with the XML of the same stem
    (so NEU-DET is ``images_dirs=[IMAGES, Validation_Images]``,
    ``annotations_dirs=[ANNOTATIONS, Validation_Annotations]``).

    The image-level label follows ``image_label``:

    * ``"largest"`` (default): the class of the box with the largest area (ties: the first in the file).
    * ``"first"``: the class of the first object in the file.
    * ``"filename"``: the file stem up to its last ``_`` (``crazing_12.jpg`` -> ``crazing``), which must
      be a class name: the image's true category in NEU-style datasets.

    Why the choice matters: 123 NEU-DET images also hold boxes of a second class, and for 10 of them
    that box is the largest, so ``"largest"`` gives class counts [300, 309, 300, 301, 300, 290] instead
    of the dataset's 300 per class; ``"filename"`` (and, on NEU, ``"first"``) gives 300 each.

    Every box is kept in ``Record.boxes`` as ``(class_index, x1, y1, x2, y2)`` normalised to [0, 1]
    whatever the image label. VOC gives no pixel mask, so ``polygons`` stays ``None``.

    Args:
        images_dirs: one folder or a list of folders of images.
        annotations_dirs: matching XML folder(s), same length as ``images_dirs``.
        class_names: classes in label order; ``None`` = sorted object names found (with ``normal_name``
            first when given). Object names outside ``class_names`` are an error.
        normal_name: class for images whose XML has no objects; ``None`` makes such images an error.
        image_label: ``"largest"``, ``"first"`` or ``"filename"`` (see above).
        extensions: image file extensions.
        root: optional base folder for relative ``images_dirs``/``annotations_dirs``.

    Raises:
        DataError: missing folders, mismatched folder lists, images without XML, unparsable XML,
            unknown class names, objectless images without ``normal_name``, or no images at all.
    """
    if image_label not in _IMAGE_LABEL_RULES:
        raise DataError(f"image_label '{image_label}' is unknown: use one of {list(_IMAGE_LABEL_RULES)}.")
    img_dirs = [require_dir(resolve(p, root), "Image folder") for p in as_path_list(images_dirs, "images_dirs")]
    ann_dirs = [
        require_dir(resolve(p, root), "Annotation folder") for p in as_path_list(annotations_dirs, "annotations_dirs")
    ]
    if not img_dirs or len(img_dirs) != len(ann_dirs):
        raise DataError(
            f"read_voc needs as many annotations_dirs as images_dirs (paired in order), got "
            f"{len(img_dirs)} image and {len(ann_dirs)} annotation folder(s): fix the data config."
        )

    pairs: list[tuple[Path, Path]] = []
    unpaired: list[str] = []
    report = ReadReport()
    for img_dir, ann_dir in zip(img_dirs, ann_dirs):
        images = list_images(img_dir, extensions, report=report)
        check_unique_stems(images, str(img_dir))
        xmls = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith(".")}
        for img in images:
            xml = xmls.pop(img.stem, None)
            if xml is None:
                unpaired.append(str(img))
            else:
                pairs.append((img, xml))
        if xmls:
            log.warning("%d annotation(s) in %s have no image and are ignored", len(xmls), ann_dir)
            report.unmatched["annotation files"].extend(str(p) for p in sorted(xmls.values()))
    if unpaired:
        raise DataError(
            f"{len(unpaired)} image(s) have no VOC annotation of the same name:{listing(unpaired)}\n"
            "Add the XML files or remove the images."
        )
    if not pairs:
        raise DataError(f"No images found in {[str(d) for d in img_dirs]}: fix images_dirs.")

    parsed = [(img, _parse_xml(xml, img)) for img, xml in pairs]
    found = sorted({obj[0] for _, objs in parsed for obj in objs})
    if class_names is None:
        names = ([normal_name] if normal_name else []) + [n for n in found if n != normal_name]
    else:
        names = [str(c) for c in class_names]
        unknown = [n for n in found if n not in names]
        if unknown:
            raise DataError(
                f"VOC object name(s) {unknown} are not in class_names {names}: add them to class_names "
                "or leave class_names unset."
            )
    if normal_name is not None and normal_name not in names:
        raise DataError(f"normal_name '{normal_name}' is not in class_names {names}: add it or unset normal_name.")
    index = {n: i for i, n in enumerate(names)}

    records: list[Record] = []
    objectless: list[str] = []
    bad_stems: list[str] = []
    for img, objs in parsed:
        boxes = [(index[n], x1, y1, x2, y2) for n, x1, y1, x2, y2 in objs]
        if image_label == "filename":
            prefix = img.stem.rsplit("_", 1)[0]
            if prefix not in index:
                bad_stems.append(f"{img.name}: '{prefix}'")
                continue
            label = index[prefix]
        elif boxes and image_label == "first":
            label = boxes[0][0]
        elif boxes:
            # max() keeps the first of equal areas, so ties go to the first box in the file.
            label = max(boxes, key=lambda b: (b[3] - b[1]) * (b[4] - b[2]))[0]
        elif normal_name is not None:
            label = index[normal_name]
        else:
            objectless.append(str(img))
            continue
        records.append(Record(path=str(img), label=label, boxes=boxes))
    if bad_stems:
        raise DataError(
            f"image_label='filename' but {len(bad_stems)} file name prefix(es) are not in class_names {names}:"
            f"{listing(bad_stems)}\nUse image_label='largest' or rename the files '<class>_<n>.<ext>'."
        )
    if objectless:
        raise DataError(
            f"{len(objectless)} image(s) have no objects in their VOC annotation:{listing(objectless)}\n"
            "Set normal_name to give them a defect-free class, or remove them."
        )
    base = resolve(Path(root), None) if root is not None else img_dirs[0].parent
    return DatasetIndex(records=records, class_names=names, root=str(base), report=report)
