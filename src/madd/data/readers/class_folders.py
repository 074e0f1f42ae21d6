"""Reader for the ``root/<class name>/<image>`` layout (X-SDD, ImageFolder-style datasets), optionally with
images at any depth, masks beside the images or in a parallel tree, and the dataset's own split folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from madd.data.readers._common import (
    IMAGE_EXTENSIONS,
    PathArg,
    check_unique_stems,
    list_images,
    listing,
    normalise_extensions,
    require_dir,
    resolve,
)
from madd.data.readers._pairing import attach_masks, is_mask_file
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.errors import DataError


def read_class_folders(
    root: PathArg,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    normal_class: str | None = None,
    mask_root: PathArg | None = None,
    mask_suffix: str = "",
    mask_extensions: Sequence[str] | None = None,
    recursive: bool = False,
    pattern: str | None = None,
    split_dirs: Mapping[str, str] | None = None,
) -> DatasetIndex:
    """List a dataset stored as one sub-folder per class.

    Args:
        root: folder holding one sub-folder per class. Folder names may contain spaces.
        class_names: classes to read, in label order. Each must be a sub-folder of ``root`` (of at least one
            split folder with ``split_dirs``); sub-folders not listed are ignored (this is how a label-space
            subset is selected). ``None`` reads every non-hidden sub-folder, in sorted order.
        extensions: file extensions recognised as images (case-insensitive). Files are decoded by content
            later, so an extension that lies about the format (a ``.png`` holding JPEG) is fine.
        normal_class: name of the defect-free class, if any. Only used for masks: a normal image without
            a mask gets an empty mask (``polygons=[]``) instead of no localisation.
        mask_root: optional folder of pixel masks. The mask of image ``<root>/<sub path>/<stem>.<ext>`` is
            ``mask_root/<sub path>/<stem><mask_suffix><mask ext>`` (a parallel tree, or beside the image when
            ``mask_root`` is ``root``), else ``mask_root/<class>/...``, else ``mask_root/...``. A defect
            image without a mask is kept without localisation.
        mask_suffix: appended to the image stem to form the mask stem, e.g. ``"_mask"``.
        mask_extensions: mask file extensions (default: ``extensions``). Masks stored beside their images
            with the same stem need extensions of their own: ``extensions: [.jpg]``,
            ``mask_extensions: [.png]``.
        recursive: search each class folder at every depth (``<class>/Imgs/x.jpg``), same as
            ``pattern: "**/*"``.
        pattern: a glob relative to each class folder (e.g. ``"Imgs/*.jpg"``); files must also have one of
            ``extensions``.
        split_dirs: the dataset's own split folders, e.g. ``{train: train, test: test}`` for
            ``root/train/<class>`` and ``root/test/<class>``; records keep their split for
            ``data.splits=predefined``.

    Returns:
        Records sorted by split, class (label order) then path.

    Raises:
        DataError: missing ``root``/``mask_root``, a requested class folder that does not exist, a class
            folder with no images, ``normal_class`` not among the classes, no class folders at all, two
            images with one stem in one folder (one is usually a mask), or any mask pairing that is not
            one image <-> one other file.
    """
    exts = normalise_extensions(extensions)
    mask_exts = normalise_extensions(mask_extensions) if mask_extensions is not None else exts
    if recursive and pattern is not None:
        raise DataError("set either recursive: true or a pattern, not both (recursive is pattern '**/*').")
    glob = "**/*" if recursive else pattern
    base = require_dir(resolve(Path(root), None), "Dataset root")
    mask_dir = require_dir(resolve(Path(mask_root), None), "Mask root") if mask_root is not None else None
    splits = {str(k): require_dir(base / str(v), f"Split folder '{k}'") for k, v in (split_dirs or {}).items()}
    if split_dirs is not None and not splits:
        raise DataError("split_dirs is empty: map split names to folders, e.g. {train: train, test: test}.")
    split_roots = splits or {None: base}

    def class_dirs(folder: Path) -> list[str]:
        return sorted(
            p.name
            for p in folder.iterdir()
            # A mask folder kept inside the dataset root is not a class.
            if p.is_dir() and not p.name.startswith(".") and (mask_dir is None or p.absolute() != mask_dir)
        )

    per_split = {s: class_dirs(f) for s, f in split_roots.items()}
    available = sorted({c for cs in per_split.values() for c in cs})
    where = f"'{base}'" + (f" (split folders {list(splits)})" if splits else "")
    if class_names is None:
        names = available
        if not names:
            raise DataError(f"Dataset root {where} has no class sub-folders: expected '<root>/<class name>/<images>'.")
    else:
        names = [str(c) for c in class_names]
        if not names:
            raise DataError("class_names is empty: list the class folders to read, or leave it unset.")
        missing = [c for c in names if c not in available]
        if missing:
            raise DataError(
                f"Unknown class name(s) {missing}: no such folder in {where}. "
                f"Available class folders: {available}. Fix class_names in the data config."
            )
        if len(set(names)) != len(names):
            raise DataError(f"class_names lists a class twice: {names}. Remove the duplicate.")
    if normal_class is not None and normal_class not in names:
        raise DataError(
            f"normal_class '{normal_class}' is not one of the classes {names}: fix normal_class or class_names."
        )

    report = ReadReport()
    for split, folder in split_roots.items():
        for other in sorted(set(per_split[split]) - set(names)):
            report.ignore("class folder not in class_names", folder / other)
    found: list[tuple[str | None, int, Path]] = []
    counts = [0] * len(names)
    for split, folder in split_roots.items():
        for label, name in enumerate(names):
            if name not in per_split[split]:
                continue
            images = list_images(folder / name, exts, glob, report)
            if mask_dir is not None:
                images = [p for p in images if not is_mask_file(p, mask_dir, mask_suffix, mask_exts)]
            else:  # with a mask rule the pairing checks name the problem more precisely
                check_unique_stems_per_folder(images)
            counts[label] += len(images)
            found += [(split, label, p) for p in images]
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        searched = "at any depth" if recursive else (f"matching '{pattern}'" if pattern else
                                                    "directly inside (sub-folders are not searched: set "
                                                    "recursive: true or a pattern)")
        raise DataError(
            f"Class folder(s) with no images (extensions {list(exts)}, {searched}):"
            f"{listing([str(f / n) for f in split_roots.values() for n in empty])}\n"
            "Add images, fix extensions/recursive/pattern, or drop the class from class_names."
        )

    masks: dict[Path, Path] = {}
    if mask_dir is not None:
        masks = attach_masks([(p, names[label]) for _, label, p in found], base, mask_dir, mask_suffix,
                             mask_exts, [p for _, _, p in found], report)
    records: list[Record] = []
    for split, label, img in found:
        rec = Record(path=str(img), label=label, split=split)
        if mask_dir is not None:
            mask = masks.get(img)
            if mask is not None:
                rec.mask_path = str(mask)
            elif names[label] == normal_class:
                rec.polygons = []  # known defect-free: empty mask
        records.append(rec)
    return DatasetIndex(records=records, class_names=list(names), root=str(base), report=report)


def check_unique_stems_per_folder(images: Sequence[Path]) -> None:
    """Two images with one stem in one folder (``x.jpg`` + ``x.png``) are almost always an image and its
    mask read as two images; refuse them instead of doubling the class."""
    by_folder: dict[Path, list[Path]] = {}
    for p in images:
        by_folder.setdefault(p.parent, []).append(p)
    for folder, files in by_folder.items():
        try:
            check_unique_stems(files, str(folder))
        except DataError as exc:
            raise DataError(
                f"{exc}\nIf one file of each pair is a mask, set mask_root to the same folder with "
                "extensions (images) and mask_extensions (masks) that differ, or a mask_suffix."
            ) from None
