"""Reader for the ``root/<class name>/<image>`` layout (X-SDD, ImageFolder-style datasets)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from madd.data.readers._common import (
    IMAGE_EXTENSIONS,
    PathArg,
    index_by_stem,
    list_images,
    listing,
    normalise_extensions,
    require_dir,
    resolve,
)
from madd.data.records import DatasetIndex, Record
from madd.errors import DataError


def read_class_folders(
    root: PathArg,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    normal_class: str | None = None,
    mask_root: PathArg | None = None,
    mask_suffix: str = "",
) -> DatasetIndex:
    """List a dataset stored as one sub-folder per class.

    Args:
        root: folder holding one sub-folder per class. Folder names may contain spaces.
        class_names: classes to read, in label order. Each must be a sub-folder of ``root``; sub-folders
            not listed are ignored (this is how a label-space subset is selected). ``None`` reads every
            non-hidden sub-folder, in sorted order.
        extensions: file extensions recognised as images (case-insensitive). Files are decoded by content
            later, so an extension that lies about the format (a ``.png`` holding JPEG) is fine.
        normal_class: name of the defect-free class, if any. Only used for masks: a normal image without
            a mask gets an empty mask (``polygons=[]``) instead of no localisation.
        mask_root: optional folder of pixel masks. For image ``<class>/<stem>.<ext>`` the mask is
            ``mask_root/<class>/<stem><mask_suffix>.<ext>``, else ``mask_root/<stem><mask_suffix>.<ext>``
            (any of ``extensions``). A defect image without a mask is kept without localisation.
        mask_suffix: appended to the image stem to form the mask stem, e.g. ``"_mask"``.

    Returns:
        Records sorted by class (label order) then file name.

    Raises:
        DataError: missing ``root``/``mask_root``, a requested class folder that does not exist, a class
            folder with no images, ``normal_class`` not among the classes, or no class folders at all.
    """
    exts = normalise_extensions(extensions)
    root_path = require_dir(resolve(Path(root), None), "Dataset root")
    mask_dir = require_dir(resolve(Path(mask_root), None), "Mask root") if mask_root is not None else None

    available = sorted(
        p.name
        for p in root_path.iterdir()
        # A mask folder kept inside the dataset root is not a class.
        if p.is_dir() and not p.name.startswith(".") and (mask_dir is None or p.absolute() != mask_dir)
    )
    if class_names is None:
        names = available
        if not names:
            raise DataError(
                f"Dataset root '{root_path}' has no class sub-folders: expected '<root>/<class name>/<images>'."
            )
    else:
        names = [str(c) for c in class_names]
        if not names:
            raise DataError("class_names is empty: list the class folders to read, or leave it unset.")
        missing = [c for c in names if c not in available]
        if missing:
            raise DataError(
                f"Unknown class name(s) {missing}: no such folder in '{root_path}'. "
                f"Available class folders: {available}. Fix class_names in the data config."
            )
        if len(set(names)) != len(names):
            raise DataError(f"class_names lists a class twice: {names}. Remove the duplicate.")
    if normal_class is not None and normal_class not in names:
        raise DataError(
            f"normal_class '{normal_class}' is not one of the classes {names}: fix normal_class or class_names."
        )

    records: list[Record] = []
    empty: list[str] = []
    for label, name in enumerate(names):
        folder = root_path / name
        images = list_images(folder, exts)
        if mask_dir is not None and mask_suffix:
            # Masks stored next to their images (mask_root == root): "<stem><suffix>" is not an image.
            stems = {p.stem for p in images}
            images = [p for p in images if not (p.stem.endswith(mask_suffix) and p.stem[: -len(mask_suffix)] in stems)]
        if not images:
            empty.append(str(folder))
            continue
        masks: dict[str, Path] = {}
        if mask_dir is not None:
            # Class sub-folder first, flat mask_root as fallback.
            masks = {**index_by_stem(mask_dir, exts, mask_suffix), **index_by_stem(mask_dir / name, exts, mask_suffix)}
        for img in images:
            rec = Record(path=str(img), label=label)
            if mask_dir is not None:
                mask = masks.get(img.stem)
                if mask is not None:
                    rec.mask_path = str(mask)
                elif name == normal_class:
                    rec.polygons = []  # known defect-free: empty mask
            records.append(rec)
    if empty:
        raise DataError(
            f"Class folder(s) with no images (extensions {list(exts)}):{listing(empty)}\n"
            "Add images, remove the folder, or drop the class from class_names."
        )
    if not records:  # unreachable while every class must be non-empty; kept as a guard
        raise DataError(f"No images found under '{root_path}'.")
    return DatasetIndex(records=records, class_names=list(names), root=str(root_path))
