"""The one sample description every reader produces.

Readers never decode pixels: they list :class:`Record` objects. Decoding happens lazily in
:class:`madd.data.dataset.DefectDataset`, so listing a dataset of thousands of images is cheap and a
corrupt file is reported with its path when it is first read (and up front by ``verify_records``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Record:
    """One image and its annotations, before decoding.

    Attributes:
        path: image file.
        label: index into the dataset's ``class_names``.
        mask_path: optional pixel mask file (same size as the image; foreground = value >= 128).
        polygons: optional list of polygons, each a flat list ``[x1, y1, x2, y2, ...]`` in *normalised*
            [0, 1] image coordinates (YOLO-seg / COCO after normalisation); rasterised to the mask.
        boxes: optional list of ``(class_index, x1, y1, x2, y2)`` in *normalised* [0, 1] coordinates.
        group: optional key for grouping in splits (e.g. the physical part); unused when ``None``.
        split: the dataset's own split (``train``/``val``/``test``) when its folders define one; used by
            ``data.splits=predefined``, ignored (merged and re-split) otherwise.
        reference_path: optional defect-free reference image of the same scene (reference/inspected pairs).
    """

    path: str
    label: int
    mask_path: str | None = None
    polygons: list[list[float]] | None = None
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    group: str | None = None
    split: str | None = None
    reference_path: str | None = None

    @property
    def has_localisation(self) -> bool:
        return self.mask_path is not None or self.polygons is not None


@dataclass
class ReadReport:
    """What a reader saw besides the records: files it skipped (and why) and annotation files it could not
    pair with an image, so a user can check that a dataset was read as intended (printed before training)."""

    #: reason -> files skipped for that reason
    ignored: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: annotation kind ("masks", "box files", ...) -> files of that kind that match no image
    unmatched: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def ignore(self, reason: str, path: object) -> None:
        self.ignored[reason].append(str(path))

    def forget(self, paths: object) -> None:
        """Drop ``paths`` from the ignored files: a reader paired them after all (masks, references, boxes)."""
        drop = {str(p) for p in paths}
        for reason in list(self.ignored):
            self.ignored[reason] = [f for f in self.ignored[reason] if f not in drop]
            if not self.ignored[reason]:
                del self.ignored[reason]


@dataclass
class DatasetIndex:
    """What a reader returns: the records plus the class names they index into."""

    records: list[Record]
    class_names: list[str]
    root: str = ""
    report: ReadReport = field(default_factory=ReadReport)

    def counts(self) -> list[int]:
        out = [0] * len(self.class_names)
        for r in self.records:
            out[r.label] += 1
        return out
