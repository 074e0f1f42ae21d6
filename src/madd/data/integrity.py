"""Checks across splits that no reader can make alone: a file (image, mask or reference) belongs to one split."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from madd.data.readers._common import listing
from madd.data.records import Record
from madd.errors import DataError


def check_split_isolation(records: Mapping[str, Sequence[Record]]) -> None:
    """Refuse any file used by records of two different splits.

    An image and its mask (or reference image) always travel in one record, so this fails only when a file
    is read twice: e.g. a mask also read as an image of its class, which could land in ``test`` while its
    image trains. ``target_labeled`` and ``target_unlabeled`` count as one split (the training pool).

    Raises:
        DataError: listing each shared file with its roles and splits.
    """
    pool = {"target_labeled": "train", "target_unlabeled": "train"}
    uses: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for split, recs in records.items():
        for r in recs:
            for role, path in (("image", r.path), ("mask", r.mask_path), ("reference", r.reference_path)):
                if path is not None:
                    uses[path].add((pool.get(split, split), role))
    leaks = sorted(f"{p}: {sorted(u)}" for p, u in uses.items() if len({s for s, _ in u}) > 1)
    if leaks:
        raise DataError(
            f"{len(leaks)} file(s) are used by more than one split (split, role):{listing(leaks)}\n"
            "A file must be read once: keep masks out of the image extensions (mask_extensions / mask_suffix) "
            "and list each image once."
        )
