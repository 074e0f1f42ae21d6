"""The images a user gives the deployed model: a folder listed by PIL's extensions, read as the training data is
(:class:`~madd.data.dataset.DefectDataset`, every file checked first). Used by ``predict.py`` and by
``export.py``'s parity check on real images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from madd.data.dataset import DefectDataset
from madd.data.image_io import verify_records
from madd.data.records import Record
from madd.errors import DataError


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), by PIL's registered extensions (content decides later)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"input_dir={root} is not a folder; give the folder of images to predict")
    extensions = {e.lower() for e in Image.registered_extensions()}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataError(f"input_dir={root} holds no image files ({', '.join(sorted(extensions)[:8])}, ...)")
    return files


def image_dataset(files: Sequence[Path], shape: Sequence[int]) -> DefectDataset:
    """The training dataset class over unlabelled files (label 0 is a placeholder), every file checked first."""
    records = [Record(str(f), 0) for f in files]
    channels, h, w = shape
    verify_records(records, channels)
    return DefectDataset(records, (h, w), channels, cache=False)
