"""Reader for a flat folder of images plus a folder of same-stem pixel masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from madd.data.image_io import load_mask
from madd.data.readers._common import (
    IMAGE_EXTENSIONS,
    PathArg,
    check_unique_stems,
    list_images,
    normalise_extensions,
    require_dir,
    resolve,
)
from madd.data.readers._pairing import attach_masks, is_mask_file
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.errors import DataError


def read_image_mask_pairs(
    image_dir: PathArg,
    mask_dir: PathArg,
    mask_suffix: str = "",
    normal_name: str = "good",
    class_names: Sequence[str] = ("good", "defect"),
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    root: PathArg | None = None,
    mask_extensions: Sequence[str] | None = None,
) -> DatasetIndex:
    """List images with optional same-stem masks; the label comes from the mask.

    The mask of ``image_dir/<stem>.<ext>`` is ``mask_dir/<stem><mask_suffix>.<any ext>`` (images and masks
    may use different formats). An image whose mask is absent or empty (no pixel >= 128) is normal;
    otherwise it is the defect class. Masks are decoded here (the label depends on their content), which
    also checks they are readable; size agreement with the image is checked by ``verify_records``.

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks.
        mask_suffix: appended to the image stem to form the mask stem, e.g. ``"_mask"``.
        normal_name: the defect-free class; must be in ``class_names``.
        class_names: exactly two classes: ``normal_name`` and the defect class, in label order.
        extensions: image (and mask) file extensions.
        mask_extensions: mask file extensions when they differ from the images' (masks beside their images
            with the same stem: ``extensions: [.jpg]``, ``mask_extensions: [.png]``).
        root: optional base folder for relative ``image_dir``/``mask_dir``.

    Raises:
        DataError: missing folders, no images, bad ``class_names``, unreadable or 0/1-valued masks, or a mask
            pairing that is not one image <-> one other file (see ``_pairing.pair_companions``).
    """
    names = [str(c) for c in class_names]
    if normal_name not in names or len(names) != 2 or len(set(names)) != 2:
        raise DataError(
            f"image_mask reader needs class_names = [normal, defect] containing normal_name '{normal_name}', "
            f"got {names}: fix class_names or normal_name in the data config."
        )
    normal_label = names.index(normal_name)
    defect_label = 1 - normal_label
    img_dir = require_dir(resolve(Path(image_dir), root), "Image folder")
    msk_dir = require_dir(resolve(Path(mask_dir), root), "Mask folder")

    mask_exts = normalise_extensions(mask_extensions if mask_extensions is not None else extensions)
    report = ReadReport()
    # Masks next to their images (<stem><suffix>.<ext>) are masks, not images.
    images = [p for p in list_images(img_dir, extensions, report=report)
              if not is_mask_file(p, msk_dir, mask_suffix, mask_exts)]
    if not images:
        raise DataError(f"No images found in '{img_dir}' (extensions {list(extensions)}): fix image_dir.")
    check_unique_stems(images, str(img_dir))
    masks = attach_masks([(p, None) for p in images], img_dir, msk_dir, mask_suffix, mask_exts, images, report,
                         key="mask_dir / mask_suffix / mask_extensions")

    records: list[Record] = []
    for img in images:
        mask = masks.get(img)
        if mask is None:
            records.append(Record(path=str(img), label=normal_label, polygons=[]))  # empty mask
            continue
        label = defect_label if load_mask(mask).any() else normal_label
        records.append(Record(path=str(img), label=label, mask_path=str(mask)))
    base = resolve(Path(root), None) if root is not None else img_dir
    return DatasetIndex(records=records, class_names=names, root=str(base), report=report)
