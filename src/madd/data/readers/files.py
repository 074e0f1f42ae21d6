"""Reader for any file layout described by patterns: images chosen by a glob and a file-name regex, the
class (and optionally the split) taken from the name, and companions paired by name rules: a reference
image (reference/inspected pairs), a pixel mask and a box text file (DeepPCB-style ``x1 y1 x2 y2 class``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from madd.data.image_io import image_size
from madd.data.readers._common import IMAGE_EXTENSIONS, PathArg, list_images, listing, require_dir, resolve
from madd.data.readers._pairing import (
    NameRule,
    check_matches,
    image_fields,
    pair_companions,
    unmatched_files,
)
from madd.data.readers.box_text import check_box_format, parse_box_file
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
_BOX_KEYS = {"name", "coordinates", "format", "class_column", "class_map"}


def _companions(rule: NameRule, images: Sequence[Path], fields: Mapping[Path, dict], what: str,
                listed: Sequence[Path], report: ReadReport, required_each: bool) -> dict[Path, Path]:
    """Pair ``images`` with the file ``rule`` names, report companions that match no image, and (with
    ``required_each``) refuse images without one."""
    cands = {img: rule.candidates(fields[img]) for img in images}
    pairs = pair_companions(images, lambda img: [[c] for c in cands[img]], what, rule.key, listed)
    exts = sorted({c.suffix.lower() for cs in cands.values() for c in cs})
    unmatched = unmatched_files({c.parent for cs in cands.values() for c in cs}, exts, pairs.values(), listed)
    check_matches(what, rule.key, list(images), pairs, unmatched, cands[images[0]] if images else [], report)
    missing = [str(img) for img in images if img not in pairs]
    if required_each and missing:
        raise DataError(f"{len(missing)} image(s) have no {what} under {rule.key} (e.g. '{missing[0]}' looks for "
                        f"{[str(c) for c in cands[Path(missing[0])]]}):{listing(missing)}\n"
                        f"Add the {what}s, fix {rule.key}, or narrow pattern / name_regex.")
    return pairs


def read_files(
    root: PathArg,
    pattern: str = "**/*",
    name_regex: str | None = None,
    class_names: Sequence[str] | None = None,
    normal_name: str | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    reference: str | Sequence[str] | None = None,
    mask: str | Sequence[str] | None = None,
    boxes: Mapping[str, object] | None = None,
    split_map: Mapping[str, str] | None = None,
) -> DatasetIndex:
    """List images chosen by ``pattern`` and ``name_regex``, with companions paired by name rules.

    Args:
        root: the dataset folder; ``pattern`` and the ``{rel_dir}``/``{root}`` placeholders are relative to it.
        pattern: glob of candidate images relative to ``root`` (default every depth); files must also have
            one of ``extensions``.
        name_regex: searched in each candidate's path relative to ``root`` (``/`` separators). Files that do
            not match are not images (a reference, a mask, another view) and are reported as ignored unless a
            rule pairs them. Named groups are placeholders of the rules; the group ``class`` is the image's
            class, the group ``split`` its split (``train``/``val``/``test``, or mapped by ``split_map``).
        class_names: classes in label order. Default: ``normal_name`` then the sorted ``class`` group values.
            Required when the class comes from boxes.
        normal_name: the class of images without boxes (when the class comes from boxes).
        extensions: image extensions.
        reference: name rule of each image's defect-free reference image (every image must have one); the
            sample then carries ``reference`` beside ``image``.
        mask: name rule of each image's pixel mask (images without one keep no localisation).
        boxes: ``{name: <rule>, coordinates: pixel | normalised, format: xyxy | xywh | cxcywh,
            class_column: last | first, class_map: {<value in file>: <class name>}}``. ``coordinates`` has no
            default: say which. Images without a box file are normal. Without a ``class`` group, the image's
            class is that of its largest box.
        split_map: renames the ``split`` group's values, e.g. ``{trainval: train}``.

    Raises:
        DataError: no image matches, a class or split not allowed, a refused pairing (own/shared/both),
            companions that match no image at all, box lines that are malformed or outside the image.
    """
    base = require_dir(resolve(Path(root), None), "Dataset root")
    report = ReadReport()
    try:
        regex = re.compile(name_regex) if name_regex is not None else None
    except re.error as exc:
        raise DataError(f"name_regex '{name_regex}' is not a valid regular expression ({exc}): fix it.") from None
    groups = list(regex.groupindex) if regex else []
    candidates = list_images(base, extensions, pattern, report)
    images, fields, others = [], {}, []
    for p in candidates:
        rel = p.relative_to(base).as_posix()
        m = regex.search(rel) if regex else None
        if regex is not None and m is None:
            others.append(p)
            continue
        found = {k: v for k, v in (m.groupdict() if m else {}).items() if v is not None}
        images.append(p)
        fields[p] = image_fields(p, base, found.get("class"), found)
    if not images:
        raise DataError(f"No image under '{base}' matches pattern '{pattern}'"
                        + (f" and name_regex '{name_regex}'" if regex else "") + f" (extensions {list(extensions)}): "
                        f"{len(candidates)} file(s) matched the pattern, e.g.{listing(candidates, 5)}\n"
                        "Fix pattern / name_regex / extensions.")

    box_cfg = dict(boxes or {})
    if boxes is not None:
        unknown = sorted(set(box_cfg) - _BOX_KEYS)
        if unknown or "name" not in box_cfg or "coordinates" not in box_cfg:
            raise DataError(f"boxes needs `name` (a name rule) and `coordinates` (pixel or normalised), and takes "
                            f"{sorted(_BOX_KEYS)}; got {sorted(box_cfg)}: fix the data config.")
        check_box_format(str(box_cfg.get("format", "xyxy")), str(box_cfg["coordinates"]),
                         str(box_cfg.get("class_column", "last")))

    if "class" in groups:
        values = sorted({f["class"] for f in fields.values()})
        if class_names is None:
            class_names = ([normal_name] if normal_name else []) + [v for v in values if v != normal_name]
        unknown = [v for v in values if v not in class_names]
        if unknown:
            raise DataError(f"The class group of name_regex gives {unknown}, which are not in class_names "
                            f"{list(class_names)}: add them or fix name_regex.")
    elif boxes is None:
        raise DataError("reader files needs the image class: a named group (?P<class>...) in name_regex, or boxes.")
    elif class_names is None:
        raise DataError("reader files takes the class from the boxes here: list class_names (normal first).")
    names = [str(c) for c in class_names]
    if normal_name is not None and normal_name not in names:
        raise DataError(f"normal_name '{normal_name}' is not in class_names {names}: add it or unset normal_name.")
    index = {n: i for i, n in enumerate(names)}

    extra = groups
    companions: dict[str, dict[Path, Path]] = {}
    for what, rule_value, key, each in (("reference image", reference, "reference", True),
                                        ("mask", mask, "mask", False),
                                        ("box file", box_cfg.get("name"), "boxes.name", False)):
        if rule_value is not None:
            companions[what] = _companions(NameRule(rule_value, key, extra), images, fields, what,
                                           images, report, each)
    used = {p for pairs in companions.values() for p in pairs.values()}
    for p in others:
        if p not in used:
            report.ignore(f"name does not match name_regex '{name_regex}'", p)

    class_map = {str(k): str(v) for k, v in dict(box_cfg.get("class_map") or {}).items()}
    bad_map = sorted(v for v in class_map.values() if v not in index)
    if bad_map:
        raise DataError(f"boxes.class_map maps to {bad_map}, which are not in class_names {names}: fix the map.")
    box_classes = {**{n: i for n, i in index.items()}, **{k: index[v] for k, v in class_map.items()}}
    records = []
    for img in images:
        f = fields[img]
        rec = Record(path=str(img), label=-1)
        if "box file" in companions and img in companions["box file"]:
            rec.boxes = parse_box_file(companions["box file"][img], image_size(img), box_classes,
                                       str(box_cfg.get("format", "xyxy")), str(box_cfg["coordinates"]),
                                       str(box_cfg.get("class_column", "last")))
        if "class" in f and f["class"]:
            rec.label = index[f["class"]]
        elif rec.boxes:
            rec.label = max(rec.boxes, key=lambda b: (b[3] - b[1]) * (b[4] - b[2]))[0]
        elif normal_name is not None:
            rec.label = index[normal_name]
        else:
            raise DataError(f"Image '{img}' has no boxes and normal_name is unset: set normal_name to the "
                            "defect-free class, or add its box file.")
        if "split" in f:
            split = (split_map or {}).get(f["split"], f["split"])
            if split not in SPLIT_NAMES:
                raise DataError(f"Image '{img}': split '{f['split']}' from name_regex is not one of "
                                f"{list(SPLIT_NAMES)}: map it with split_map.")
            rec.split = split
        if "mask" in companions and img in companions["mask"]:
            rec.mask_path = str(companions["mask"][img])
        if "reference image" in companions:
            rec.reference_path = str(companions["reference image"][img])
        records.append(rec)
    return DatasetIndex(records=records, class_names=names, root=str(base), report=report)
