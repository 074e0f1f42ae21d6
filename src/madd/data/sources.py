"""Turn a data config entry (``reader`` + its arguments) into a :class:`DatasetIndex`, and map labels.

A dataset entry in ``conf/data/*.yaml`` looks like::

    target:
      reader: class_folders          # or synthetic, image_mask, voc, yolo, coco, mvtec, folder, files
      root: ${paths.shared_data_dir}/x_sdd/X-SDD/datas
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from madd.data.records import DatasetIndex, Record
from madd.errors import DataError


def build_index(spec: Mapping, class_names: Sequence[str] | None = None) -> DatasetIndex:
    """Run the reader named by ``spec["reader"]`` with the rest of ``spec`` as keyword arguments.

    When ``class_names`` is given the reader's classes must be exactly these, in this order (the config is
    the single source of class order, so checkpoints stay meaningful across machines).
    """
    kwargs = dict(spec)
    reader = kwargs.pop("reader", None)
    if reader is None:
        raise DataError("a dataset entry needs a `reader` key (synthetic, class_folders, image_mask, voc, yolo, coco, "
                        "mvtec, folder, files)")
    if reader == "synthetic":
        from madd.data.synthetic import generate_synthetic

        index = generate_synthetic(**kwargs)
    else:
        from madd.data.readers import read_dataset

        if class_names is not None and "class_names" not in kwargs and reader in ("class_folders", "voc", "mvtec", "files"):
            kwargs["class_names"] = list(class_names)
        index = read_dataset(reader, **kwargs)
    if class_names is not None and list(index.class_names) != list(class_names):
        raise DataError(
            f"dataset at {index.root or spec} has classes {index.class_names} but data.class_names is "
            f"{list(class_names)}; make data.class_names list the dataset's classes in this order"
        )
    if not index.records:
        raise DataError(f"dataset at {index.root or spec} has no images; check the path and file extensions")
    return index


def map_labels(
    source: DatasetIndex, target_class_names: Sequence[str], mapping: Mapping[str, str | None] | None
) -> list[Record]:
    """Re-label source records into the target's label space; drop unmapped source classes.

    ``mapping`` maps source class name to target class name (``null`` drops the class). Without a mapping,
    classes are matched by identical name. Unknown names on either side are an error, not a silent drop.
    """
    target_index = {n: i for i, n in enumerate(target_class_names)}
    if mapping is None:
        mapping = {n: n for n in source.class_names if n in target_index}
    unknown_src = [s for s in mapping if s not in source.class_names]
    unknown_tgt = [t for t in mapping.values() if t is not None and t not in target_index]
    if unknown_src or unknown_tgt:
        raise DataError(
            "data.label_mapping names unknown classes: "
            + (f"source {unknown_src} (source classes: {list(source.class_names)}) " if unknown_src else "")
            + (f"target {unknown_tgt} (target classes: {list(target_class_names)})" if unknown_tgt else "")
            + "; fix the names in data.label_mapping"
        )
    out = []
    for rec in source.records:
        dst = mapping.get(source.class_names[rec.label])
        if dst is None:
            continue
        new = target_index[dst]
        boxes = [(target_index[mapping[source.class_names[b[0]]]], *b[1:]) for b in rec.boxes
                 if mapping.get(source.class_names[b[0]]) is not None]
        out.append(replace(rec, label=new, boxes=boxes))
    if not out:
        raise DataError(
            f"no source image maps into the target classes {list(target_class_names)}; "
            "set data.label_mapping (source class -> target class)"
        )
    return out


def merge_classes(index: DatasetIndex, class_names: Sequence[str], merge: Mapping[str, Sequence[str]]) -> DatasetIndex:
    """Relabel ``index`` into ``class_names`` by merging dataset classes (``data.class_merge``).

    ``merge`` maps a new class to the dataset classes it absorbs; a dataset class not listed keeps its name.
    Every dataset class must end up in ``class_names`` (nothing is dropped silently).
    """
    unknown = sorted({src for sources in merge.values() for src in sources} - set(index.class_names))
    if unknown:
        raise DataError(f"data.class_merge names {unknown}, which are not classes of the dataset "
                        f"{list(index.class_names)}; fix the names")
    mapping = {src: new for new, sources in merge.items() for src in sources}
    for name in index.class_names:
        mapping.setdefault(name, name)
    lost = sorted(src for src, dst in mapping.items() if dst not in class_names)
    if lost:
        raise DataError(
            f"data.class_merge leaves dataset classes {lost} outside data.class_names {list(class_names)}; "
            "merge them into a listed class or list them"
        )
    records = map_labels(index, class_names, mapping)
    return DatasetIndex(records, list(class_names), index.root, index.report)
