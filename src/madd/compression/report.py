"""Pruning reports in the shape of the pruned-ResNet paper's Tables II and III, as Markdown and CSV.

One row per stage (``baseline``/``unpruned``, ``round 1`` ... or ``final``) with the cost (parameters,
MACs, FLOPs, CPU latency and throughput at batch 1 and 32) and the image metrics (accuracy, mAP, DR,
FAR); derived columns compare each row with the first one:

* ``*_ratio``: pruned / reference (parameters, MACs, FLOPs, latency);
* ``*_change``: pruned - reference in percentage points. The sign follows Table II's "Acc. drops"
  column: negative means the pruned model is worse. The issue's target "accuracy drop at most 1 point"
  is ``accuracy_change >= -1``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

COST = ("params", "macs", "flops", "latency_b1_ms", "latency_b32_ms")
METRICS = ("accuracy", "mAP", "DR", "FAR")


def with_comparisons(rows: Sequence[Mapping[str, float | str]]) -> pd.DataFrame:
    """The rows as a table plus ``*_ratio`` and ``*_change`` columns against the first row."""
    df = pd.DataFrame([dict(r) for r in rows])
    if df.empty:
        return df
    ref = df.iloc[0]
    for col in COST:
        if col in df and isinstance(ref.get(col), numbers.Real) and ref[col] and not math.isnan(ref[col]):
            df[f"{col}_ratio"] = df[col] / ref[col]
    for col in METRICS:
        if col in df:
            df[f"{col}_change"] = (df[col] - ref[col]) * 100.0
    return df


def _fmt(col: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and col not in ("params", "macs", "flops"):
        return str(int(value))
    if col in ("params", "macs", "flops"):
        return f"{value:.2e}"
    if col.endswith("_ratio"):
        return f"{value:.3f}"
    if col.endswith("_change"):
        return f"{value:+.2f}"
    if col in METRICS:
        return f"{100 * value:.2f}"
    if col.startswith("latency") or col.startswith("throughput"):
        return f"{value:.1f}"
    if col == "kept_channels":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table (hand-formatted: pandas' ``to_markdown`` needs ``tabulate``, not a dependency)."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in cols) + " |")
    return "\n".join(lines)


TABLE_COLUMNS = (
    "stage", "kept_channels", "params", "params_ratio", "macs", "flops", "flops_ratio", "latency_b1_ms",
    "latency_b1_ms_ratio", "throughput_b1", "latency_b32_ms", "throughput_b32", "accuracy", "accuracy_change",
    "mAP", "mAP_change", "DR", "DR_change", "FAR", "FAR_change",
)


def write_report(rows: Sequence[Mapping[str, float | str]], out_dir: str | Path, name: str = "report",
                 title: str = "Pruning report") -> pd.DataFrame:
    """Write ``<out_dir>/<name>.csv`` (every column) and ``<name>.md`` (the Tables II/III columns)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = with_comparisons(rows)
    df.to_csv(out / f"{name}.csv", index=False)
    text = (
        f"# {title}\n\nparams/MACs/FLOPs per image; latency in ms and throughput in images/s on the CPU; "
        "metrics in %; *_change in points against the first row (negative = worse); *_ratio = row / first row.\n\n"
        + to_markdown(df, TABLE_COLUMNS) + "\n"
    )
    (out / f"{name}.md").write_text(text)
    return df
