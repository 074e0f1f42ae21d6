"""Tables in the paper's shape: mean ± std over seeds, paired t-tests against a reference row, Markdown and CSV.

* A *row* is a combination of job attributes (``rows``, e.g. the method, or a swept loss weight); a *column* a
  combination of others (``columns``, e.g. the dataset); the jobs sharing a row and a column differ only by seed.
* mean and the sample standard deviation (``ddof=1``) over those jobs; ``n`` is their number.
* p-value: ``scipy.stats.ttest_rel`` (two-sided paired t-test) of a row against the reference row of the same
  column, pairing the jobs by seed (the same seed means the same data split and initialisation). Needs at least
  two common seeds and differences that are not all equal (else the statistic is undefined); NaN otherwise. The paper tests its method against the runner-up (Sec. 3.2.1); here the
  reference is a chosen row label, or ``best`` (the row with the best mean of the first metric, per column).
* Δ metrics (cross-domain performance drop, e.g. ΔmAP): per job, the reference row's value with the same seed and
  column minus the job's value, then summarised like any metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from madd.errors import MaddConfigError

LOWER_IS_BETTER = ("loss", "FAR", "DAT_s")
PERCENT_LEAVES = {"mAP", "accuracy", "f1", "auroc", "DR", "FAR", "specificity", "DR_small", "DR_rare", "pixel_f1",
                  "pixel_iou", "pixel_auroc", "image_auroc", "DR_at_FAR"}
IGNORED_KEYS = ("hydra.", "paths.", "logger", "callbacks.rich_progress_bar")


def lower_is_better(metric: str) -> bool:
    return metric.lstrip("Δ").endswith(LOWER_IS_BETTER) or metric.startswith("Δ")


def is_percent(metric: str) -> bool:
    """Fractions in [0, 1] shown as percentages: mAP, DR, FAR, ... (and per-class ``test/DR/<class>``)."""
    name = metric.lstrip("Δ")
    return name.startswith(("test/", "val/")) and (name.split("/")[1].removesuffix("_best") in PERCENT_LEAVES)


def auto_rows(jobs: pd.DataFrame, columns: Sequence[str], seed_key: str = "seed") -> list[str]:
    """The override keys whose values differ between jobs, except the seed, the column keys and bookkeeping."""
    keys = sorted({k for ks in jobs.get("override_keys", pd.Series(dtype=object)).dropna() for k in ks})
    varying = [
        k for k in keys
        if k != seed_key and k not in columns and not k.startswith(IGNORED_KEYS) and k in jobs
        and jobs[k].astype(str).nunique(dropna=False) > 1
    ]
    return varying or ["task_name"]


def _fmt_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "null" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def label_rows(jobs: pd.DataFrame, rows: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Add ``row`` and ``column`` label columns (``value`` for one key, ``k1=v1 k2=v2`` for several)."""
    missing = [k for k in [*rows, *columns] if k not in jobs]
    if missing:
        raise MaddConfigError(f"rows/columns {missing} are neither config groups, overrides nor collected keys; "
                              f"known: {sorted(c for c in jobs.columns if not c.startswith(('test/', 'val/')))}. "
                              "Add config keys with keys=[...]")

    def label(record: Mapping[str, Any], keys: Sequence[str]) -> str:
        if not keys:
            return ""
        if len(keys) == 1:
            return _fmt_value(record[keys[0]])
        return " ".join(f"{k}={_fmt_value(record[k])}" for k in keys)

    out = jobs.copy()
    out["row"] = [label(r, rows) for r in out.to_dict("records")]
    out["column"] = [label(r, columns) for r in out.to_dict("records")]
    return out


def _seed_series(jobs: pd.DataFrame, row: str, column: str, metric: str, seed_key: str) -> pd.Series:
    part = jobs[(jobs["row"] == row) & (jobs["column"] == column) & (jobs["status"] == "completed")]
    if metric not in part:
        return pd.Series(dtype=float)
    values = part[[seed_key, metric]].dropna()
    return values.groupby(seed_key)[metric].mean()  # repeated seeds (reruns) are averaged


def paired_test(jobs: pd.DataFrame, row: str, reference: str, column: str, metric: str,
                seed_key: str = "seed") -> dict[str, float]:
    """``scipy.stats.ttest_rel`` of ``row`` against ``reference`` over their common seeds."""
    a = _seed_series(jobs, row, column, metric, seed_key)
    b = _seed_series(jobs, reference, column, metric, seed_key)
    common = a.index.intersection(b.index)
    out = {"n_pairs": len(common), "t": math.nan, "p_value": math.nan,
           "mean_diff": float((a[common] - b[common]).mean()) if len(common) else math.nan}
    diff = a[common].to_numpy() - b[common].to_numpy()
    # constant differences (identical rows included) make the t statistic undefined: report no p-value
    if len(common) >= 2 and not np.allclose(diff, diff.mean(), rtol=0.0, atol=1e-12):
        res = stats.ttest_rel(a[common].to_numpy(), b[common].to_numpy())
        out.update(t=float(res.statistic), p_value=float(res.pvalue))
    return out


def add_delta(jobs: pd.DataFrame, metric: str, reference: str, seed_key: str = "seed") -> str:
    """Add ``Δ<metric>`` = reference row's value (same column and seed) - the job's value; return its name."""
    name = f"Δ{metric}"
    ref = jobs[(jobs["row"] == reference) & (jobs["status"] == "completed")]
    if ref.empty:
        raise MaddConfigError(f"delta.reference={reference!r} is not a row; rows are {sorted(jobs['row'].unique())}")
    lookup = ref.groupby(["column", seed_key])[metric].mean()
    jobs[name] = [
        lookup.get((c, s), math.nan) - v if metric in jobs else math.nan
        for c, s, v in zip(jobs["column"], jobs[seed_key], jobs.get(metric, pd.Series(math.nan, index=jobs.index)))
    ]
    return name


def best_row(summary: pd.DataFrame, column: str, metric: str) -> str | None:
    part = summary[(summary["column"] == column) & (summary["metric"] == metric)].dropna(subset=["mean"])
    if part.empty:
        return None
    idx = part["mean"].idxmin() if lower_is_better(metric) else part["mean"].idxmax()
    return str(part.loc[idx, "row"])


def display_order(labels: Sequence[str]) -> list[str]:
    """Distinct labels in order of appearance, or ascending when all are numbers (budgets, loss weights), so
    jobs gathered from several multiruns still read 20, 50, 100, 200."""
    distinct = list(dict.fromkeys(labels))
    try:
        return sorted(distinct, key=float)
    except (TypeError, ValueError):
        return distinct


def summarize(jobs: pd.DataFrame, metrics: Sequence[str], reference: str | None = "best",
              seed_key: str = "seed") -> pd.DataFrame:
    """Long table: one line per (row, column, metric) with mean, std, n, reference, t, p_value, n_pairs."""
    done = jobs[jobs["status"] == "completed"]
    lines = []
    row_order = display_order(jobs["row"])
    for column in display_order(jobs["column"]):
        for row in row_order:
            part = done[(done["row"] == row) & (done["column"] == column)]
            if part.empty and not ((jobs["row"] == row) & (jobs["column"] == column)).any():
                continue
            for metric in metrics:
                values = part[metric].dropna().astype(float) if metric in part else pd.Series(dtype=float)
                lines.append({
                    "row": row, "column": column, "metric": metric, "n": len(values),
                    "mean": float(values.mean()) if len(values) else math.nan,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                })
    summary = pd.DataFrame(lines, columns=["row", "column", "metric", "n", "mean", "std"])
    if summary.empty:
        return summary.assign(reference=None, t=math.nan, p_value=math.nan, n_pairs=0)
    if reference not in (None, "none", "best") and reference not in set(summary["row"]):
        raise MaddConfigError(f"reference={reference!r} is not a row; rows are {row_order} (or use best)")
    refs = {}
    for column in summary["column"].unique():
        if reference in (None, "none") or summary.loc[summary["column"] == column, "row"].nunique() < 2:
            refs[column] = None
        elif reference == "best":
            refs[column] = best_row(summary, column, metrics[0])
        else:
            refs[column] = reference
    tests = []
    for line in summary.itertuples():
        ref = refs[line.column]
        if ref is None or line.row == ref:
            tests.append({"reference": ref, "t": math.nan, "p_value": math.nan, "n_pairs": 0})
            continue
        res = paired_test(jobs, line.row, ref, line.column, line.metric, seed_key)
        tests.append({"reference": ref, "t": res["t"], "p_value": res["p_value"], "n_pairs": res["n_pairs"]})
    return pd.concat([summary, pd.DataFrame(tests, index=summary.index)], axis=1)


# ---------------------------------------------------------------------- Markdown
def metric_title(metric: str) -> str:
    delta = "Δ" if metric.startswith("Δ") else ""
    name = metric.lstrip("Δ").removeprefix("test/")
    return f"{delta}{name} (%)" if is_percent(metric) else ("DAT (s)" if name == "DAT_s" else delta + name)


def format_cell(line: Mapping[str, Any], decimals: int = 1, show_n: int | None = None) -> str:
    mean, std = line["mean"], line["std"]
    if mean is None or math.isnan(mean):
        return "–"
    scale = 100.0 if is_percent(line["metric"]) else 1.0
    if scale == 1.0 and abs(mean) >= 1000:  # counts (params)
        fmt = "{:.0f}"
    elif scale != 1.0 or abs(mean) >= 10:
        fmt = f"{{:.{decimals}f}}"
    else:
        fmt = "{:.3g}"
    text = fmt.format(mean * scale)
    if std is not None and not math.isnan(std):
        text += " ± " + fmt.format(std * scale)
    p = line.get("p_value")
    if p is not None and not math.isnan(p):
        text += " (p<0.001)" if p < 0.001 else f" (p={p:.3f})"
    elif line.get("reference") is not None and line["row"] == line["reference"]:
        text += " (ref)"
    if show_n is not None and line["n"] != show_n:
        text += f" [n={line['n']}]"
    return text


def to_markdown(summary: pd.DataFrame, rows_title: str = "row", decimals: int = 1) -> str:
    """The paper's layout: with several columns, ``| row | metric | col1 | col2 |``; with one, a wide table
    ``| row | metric1 | metric2 |``. Cells are ``mean ± std (p=...)``; the reference row says ``(ref)``."""
    if summary.empty:
        return "_no completed jobs_\n"
    typical_n = int(summary["n"].max())  # cells with fewer runs (failed or missing jobs) say [n=k]
    columns = list(dict.fromkeys(summary["column"]))
    metrics = list(dict.fromkeys(summary["metric"]))
    rows = list(dict.fromkeys(summary["row"]))
    cell = {(r.row, r.column, r.metric): format_cell(r._asdict(), decimals, typical_n) for r in summary.itertuples()}
    lines = []
    if len(columns) > 1:
        lines.append("| " + " | ".join([rows_title, "metric", *columns]) + " |")
        lines.append("|" + "---|" * (2 + len(columns)))
        for row in rows:
            for i, metric in enumerate(metrics):
                cells = [cell.get((row, c, metric), "") for c in columns]
                lines.append("| " + " | ".join([row if i == 0 else "", metric_title(metric), *cells]) + " |")
    else:
        lines.append("| " + " | ".join([rows_title, *map(metric_title, metrics)]) + " |")
        lines.append("|" + "---|" * (1 + len(metrics)))
        for row in rows:
            lines.append("| " + " | ".join([row, *[cell.get((row, columns[0], m), "") for m in metrics]]) + " |")
    refs = sorted({str(r) for r in summary["reference"].dropna()})
    note = f"mean ± std over n = {typical_n} seeds" if typical_n > 1 else "one seed (n = 1): no spread, no test"
    if refs and typical_n > 1:
        note += f"; p: paired t-test (scipy.stats.ttest_rel, paired by seed) against {', '.join(refs)} (ref)"
    return "\n".join(lines) + f"\n\n_{note}._\n"
