"""Reader for anomalib's ``Folder`` layout: a folder of normal images, a folder of abnormal images, an
optional folder of their masks and an optional folder of normal test images (same keys as
``anomalib.data.Folder``, so a config moves between the two)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from madd.data.readers._common import IMAGE_EXTENSIONS, PathArg, as_path_list, list_images, require_dir, resolve
from madd.data.readers._pairing import attach_masks
from madd.data.records import DatasetIndex, ReadReport, Record
from madd.data.splits import ratio_split
from madd.errors import DataError


def read_folder(
    normal_dir: PathArg | Sequence[PathArg],
    abnormal_dir: PathArg | Sequence[PathArg] | None = None,
    normal_test_dir: PathArg | Sequence[PathArg] | None = None,
    mask_dir: PathArg | Sequence[PathArg] | None = None,
    mask_suffix: str = "",
    normal_split_ratio: float = 0.2,
    class_names: Sequence[str] = ("good", "defect"),
    normal_name: str = "good",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    mask_extensions: Sequence[str] | None = None,
    seed: int = 0,
    root: PathArg | None = None,
) -> DatasetIndex:
    """List a normal / abnormal folder dataset the way ``anomalib.data.Folder`` does.

    Splits (kept with ``data.splits=predefined``): ``normal_dir`` images are ``train``; abnormal images and
    ``normal_test_dir`` images are ``test``. Without ``normal_test_dir``, ``normal_split_ratio`` of the normal
    images (drawn with ``seed``) go to ``test``, as in anomalib, so the test split has both classes.

    Masks: the mask of ``<abnormal_dir>/<sub path>/<stem>.<ext>`` is
    ``<mask_dir>/<sub path>/<stem><mask_suffix><mask ext>`` (stem pairing; anomalib pairs by sort order).

    Args:
        normal_dir, abnormal_dir, normal_test_dir, mask_dir: one folder or a list each (relative to ``root``).
            With several abnormal folders, ``mask_dir`` lists one mask folder per abnormal folder.
        mask_suffix, extensions, mask_extensions: as for ``class_folders``.
        normal_split_ratio: share of ``normal_dir`` moved to ``test`` when ``normal_test_dir`` is unset.
        class_names: ``[normal, defect]``; ``normal_name`` must be one of them.
        seed: draws the normal test images (set it to ``${data.seed}``).
        root: base folder of relative folders.

    Raises:
        DataError: missing folders, empty normal folder, bad ``class_names``, a mask folder count that does
            not match the abnormal folders, or any refused mask pairing.
    """
    names = [str(c) for c in class_names]
    if len(names) != 2 or len(set(names)) != 2 or normal_name not in names:
        raise DataError(f"reader folder needs class_names = [normal, defect] containing normal_name "
                        f"'{normal_name}', got {names}: fix class_names or normal_name.")
    if not 0.0 <= normal_split_ratio < 1.0:
        raise DataError(f"normal_split_ratio must be in [0, 1), got {normal_split_ratio}.")
    normal_label, defect_label = names.index(normal_name), 1 - names.index(normal_name)
    exts = extensions
    report = ReadReport()

    def dirs(value, key: str) -> list[Path]:
        return [require_dir(resolve(p, root), f"{key} folder") for p in as_path_list(value, key)]

    def images(folders: list[Path]) -> list[tuple[Path, Path]]:
        return [(f, p) for f in folders for p in list_images(f, exts, "**/*", report)]

    normal = images(dirs(normal_dir, "normal_dir"))
    if not normal:
        raise DataError(f"normal_dir {normal_dir!r} holds no images (extensions {list(exts)}): fix normal_dir.")
    abnormal_dirs = dirs(abnormal_dir, "abnormal_dir")
    abnormal = images(abnormal_dirs)
    normal_test = images(dirs(normal_test_dir, "normal_test_dir"))
    mask_dirs = dirs(mask_dir, "mask_dir")
    if mask_dirs and len(mask_dirs) != len(abnormal_dirs):
        raise DataError(f"mask_dir lists {len(mask_dirs)} folder(s) for {len(abnormal_dirs)} abnormal_dir folder(s): "
                        "give one mask folder per abnormal folder, in the same order.")

    splits = ["train"] * len(normal)
    if not normal_test and normal_split_ratio > 0:
        test = ratio_split(np.zeros(len(normal), int), {"train": 1 - normal_split_ratio,
                                                        "test": normal_split_ratio}, seed)["test"]
        for i in test:
            splits[i] = "test"
    listed = [p for _, p in normal + abnormal + normal_test]
    masks: dict[Path, Path] = {}
    for a_dir, m_dir in zip(abnormal_dirs, mask_dirs):
        mine = [(p, None) for f, p in abnormal if f == a_dir]
        masks |= attach_masks(mine, a_dir, m_dir, mask_suffix, mask_extensions or exts, listed, report,
                              key="mask_dir / mask_suffix / mask_extensions")
    empty_mask = [] if mask_dirs else None
    records = [Record(str(p), normal_label, split=s, polygons=empty_mask) for (_, p), s in zip(normal, splits)]
    records += [Record(str(p), normal_label, split="test", polygons=empty_mask) for _, p in normal_test]
    records += [Record(str(p), defect_label, split="test", mask_path=str(masks[p]) if p in masks else None)
                for _, p in abnormal]
    base = resolve(Path(root), None) if root is not None else normal[0][0]
    return DatasetIndex(records=records, class_names=names, root=str(base), report=report)
