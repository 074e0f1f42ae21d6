"""Dataset readers: each lists :class:`~madd.data.records.Record` objects and never decodes pixels
for training (only ``image_mask`` reads masks, because its labels depend on them).

Pick one from a config with :func:`read_dataset`::

    read_dataset("voc", root="/data/neu_det", images_dirs=["IMAGES", "Validation_Images"],
                 annotations_dirs=["ANNOTATIONS", "Validation_Annotations"])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from madd.data.readers._common import IMAGE_EXTENSIONS
from madd.data.readers.class_folders import read_class_folders
from madd.data.readers.coco import read_coco
from madd.data.readers.files import read_files
from madd.data.readers.folder import read_folder
from madd.data.readers.image_mask import read_image_mask_pairs
from madd.data.readers.mvtec import read_mvtec
from madd.data.readers.voc import read_voc
from madd.data.readers.yolo import read_yolo
from madd.data.records import DatasetIndex
from madd.errors import DataError

READERS: dict[str, Callable[..., DatasetIndex]] = {
    "class_folders": read_class_folders,
    "image_mask": read_image_mask_pairs,
    "voc": read_voc,
    "yolo": read_yolo,
    "coco": read_coco,
    "mvtec": read_mvtec,
    "folder": read_folder,
    "files": read_files,
}


def read_dataset(format: str, **kwargs: Any) -> DatasetIndex:  # noqa: A002 - "format" is the config key
    """Run the reader registered as ``format`` with config-style keyword arguments.

    Raises:
        DataError: unknown ``format`` (lists the valid ones), or keyword arguments the reader does not
            take / required ones missing (lists the reader's parameters), plus whatever the reader raises.
    """
    reader = READERS.get(format)
    if reader is None:
        raise DataError(f"Unknown dataset format '{format}': use one of {sorted(READERS)}.")
    signature = inspect.signature(reader)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        # A typo in a config key should name the reader's real parameters, not show a Python traceback.
        raise DataError(
            f"Bad arguments for dataset format '{format}' ({exc}); it takes: {list(signature.parameters)}."
        ) from None
    return reader(**kwargs)


__all__ = [
    "IMAGE_EXTENSIONS",
    "READERS",
    "read_class_folders",
    "read_coco",
    "read_dataset",
    "read_files",
    "read_folder",
    "read_image_mask_pairs",
    "read_mvtec",
    "read_voc",
    "read_yolo",
]
