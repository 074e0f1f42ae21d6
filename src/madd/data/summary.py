"""The data summary printed before training: images per class and split, masks, boxes and reference images
found, files ignored (and why) and annotation files that matched no image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from madd.data.records import ReadReport, Record

EXAMPLES = 3


def format_summary(records: Mapping[str, Sequence[Record]], class_names: Sequence[str],
                   report: ReadReport | None = None, title: str = "target") -> str:
    """A plain-text table (one row per split) and the reader's report; see the module docstring."""
    splits = [s for s in records if records[s]] or list(records)
    width = max([len(c) for c in class_names] + [len(s) for s in splits] + [8])
    head = f"{'':<{width}} " + " ".join(f"{s:>{max(len(s), 6)}}" for s in splits)
    lines = [f"Data summary ({title}): images per class and split", head]

    def row(name: str, values: list[int]) -> str:
        return f"{name:<{width}} " + " ".join(f"{v:>{max(len(s), 6)}}" for s, v in zip(splits, values))

    for i, c in enumerate(class_names):
        lines.append(row(c, [sum(r.label == i for r in records[s]) for s in splits]))
    lines.append(row("total", [len(records[s]) for s in splits]))
    lines.append(row("masks", [sum(r.mask_path is not None or bool(r.polygons) for r in records[s]) for s in splits]))
    lines.append(row("boxes", [sum(len(r.boxes) for r in records[s]) for s in splits]))
    if any(r.reference_path for s in splits for r in records[s]):
        lines.append(row("refs", [sum(r.reference_path is not None for r in records[s]) for s in splits]))
    if report is not None:
        for reason, files in sorted(report.ignored.items()):
            lines.append(f"ignored: {len(files)} file(s), {reason}; e.g. {', '.join(files[:EXAMPLES])}")
        for kind, files in sorted(report.unmatched.items()):
            lines.append(f"unmatched: {len(files)} {kind} match no image; e.g. {', '.join(files[:EXAMPLES])}")
        if not report.ignored and not report.unmatched:
            lines.append("ignored: none")
    return "\n".join(lines)
