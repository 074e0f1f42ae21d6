"""The one sample description every reader produces.

Readers never decode pixels: they list :class:`Record` objects. Decoding happens lazily in
:class:`madd.data.dataset.DefectDataset`, so listing a dataset of thousands of images is cheap and a
corrupt file is reported with its path when it is first read (and up front by ``verify_records``).
"""

from __future__ import annotations

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
    """

    path: str
    label: int
    mask_path: str | None = None
    polygons: list[list[float]] | None = None
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    group: str | None = None

    @property
    def has_localisation(self) -> bool:
        return self.mask_path is not None or self.polygons is not None


@dataclass
class DatasetIndex:
    """What a reader returns: the records plus the class names they index into."""

    records: list[Record]
    class_names: list[str]
    root: str = ""

    def counts(self) -> list[int]:
        out = [0] * len(self.class_names)
        for r in self.records:
            out[r.label] += 1
        return out
