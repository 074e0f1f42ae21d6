"""Reader for MVTec AD's layout: ``train/good``, ``test/<defect or good>``,
``ground_truth/<defect>/<stem>_mask.png`` (one category folder, e.g. ``mvtec_ad/bottle``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from madd.data.readers._common import IMAGE_EXTENSIONS, PathArg, require_dir, resolve
from madd.data.readers.class_folders import read_class_folders
from madd.data.records import DatasetIndex


def read_mvtec(
    root: PathArg,
    class_names: Sequence[str] | None = None,
    normal_name: str = "good",
    mask_suffix: str = "_mask",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    mask_extensions: Sequence[str] = (".png",),
) -> DatasetIndex:
    """List one MVTec AD category (or any dataset laid out the same way: MVTec LOCO, VisA after anomalib's
    conversion).

    ``train/<class>`` images get split ``train`` and ``test/<class>`` images split ``test`` (kept as given with
    ``data.splits=predefined``, merged and re-split otherwise). Each defect folder is a class; the mask of
    ``test/<defect>/<stem>.png`` is ``ground_truth/<defect>/<stem><mask_suffix>.png``. Normal images get an
    empty mask.

    Args:
        root: the category folder (holds ``train``, ``test`` and ``ground_truth``).
        class_names: classes in label order; default ``[normal_name, *sorted defect folders]``.
        normal_name: the defect-free folder name (``good``).
        mask_suffix, extensions, mask_extensions: as for ``class_folders``.

    Raises:
        DataError: a missing ``train``/``test``/``ground_truth`` folder, or anything ``class_folders`` refuses.
    """
    base = require_dir(resolve(Path(root), None), "MVTec category folder")
    gt = require_dir(base / "ground_truth", "MVTec ground_truth folder")
    if class_names is None:
        found = {p.name for split in ("train", "test") for p in require_dir(base / split, f"MVTec {split} folder")
                 .iterdir() if p.is_dir() and not p.name.startswith(".")}
        class_names = [normal_name, *sorted(found - {normal_name})]
    return read_class_folders(
        base, class_names=class_names, extensions=extensions, normal_class=normal_name, mask_root=gt,
        mask_suffix=mask_suffix, mask_extensions=mask_extensions, split_dirs={"train": "train", "test": "test"},
    )
