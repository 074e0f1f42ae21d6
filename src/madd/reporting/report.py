"""What ``report.py`` runs: jobs table -> summary with statistics -> Markdown, CSV and PNG files.

Outputs in ``out`` (default ``<dir>/report``):

* ``report.md``: the table(s), the failed jobs, the figures;
* ``summary.csv``: one line per (row, column, metric): mean, std, n, reference, t, p_value, n_pairs;
* ``runs.csv``: one line per job with its attributes, status and every metric (the raw numbers behind the table);
* ``<metric>_vs_<key>.png``: the metric against each numeric row key (loss weight, label budget), error bars =
  std over seeds; ``pr_curves.png``: PR curves pooled over seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from madd.errors import MaddConfigError
from madd.reporting import plots
from madd.reporting.collect import collect, load_predictions
from madd.reporting.tables import add_delta, auto_rows, label_rows, summarize, to_markdown
from madd.utils.schema import require_writable_dir

log = logging.getLogger(__name__)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, Path)) else list(value)


def resolve_layout(jobs: pd.DataFrame, rows: Any, columns: Any, seed_key: str) -> tuple[list[str], list[str]]:
    """``columns: auto`` is the dataset (``data`` choice) when the jobs use several; ``rows: auto`` the varying
    overrides (see :func:`~madd.reporting.tables.auto_rows`)."""
    if columns == "auto":
        columns = ["data"] if "data" in jobs and jobs["data"].nunique() > 1 else []
    columns = _as_list(columns)
    rows = auto_rows(jobs, columns, seed_key) if rows == "auto" else _as_list(rows)
    return rows, columns


def make_report(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Build every output described in the module docstring; return their paths and the tables."""
    dirs = _as_list(cfg.get("dir"))
    if not dirs:
        raise MaddConfigError("dir is not set: report.py dir=<multirun folder> (the folder train.py -m printed)")
    seed_key = cfg.get("seed_key", "seed")
    jobs = collect(dirs, extra_keys=_as_list(cfg.get("keys")),
                   small_fraction=float(cfg.get("small_defect_fraction", 0.01)),
                   rare_below=int(cfg.get("rare_below", 5)))
    rows, columns = resolve_layout(jobs, cfg.get("rows", "auto"), cfg.get("columns", "auto"), seed_key)
    jobs = label_rows(jobs, rows, columns)

    wanted = _as_list(cfg.get("metrics"))
    metrics = [m for m in wanted if m in jobs]
    skipped = [m for m in wanted if m not in metrics]
    empty = [m for m in metrics if jobs[m].isna().all()]
    delta = cfg.get("delta") or {}
    if delta:
        metrics.append(add_delta(jobs, delta["metric"], str(delta["reference"]), seed_key))
    if not metrics:
        raise MaddConfigError(f"none of metrics={wanted} was found in the jobs; "
                              f"collected: {sorted(c for c in jobs.columns if c.startswith(('test/', 'val/')))}")
    reference = cfg.get("reference", "best")
    summary = summarize(jobs, metrics, None if reference is None else str(reference), seed_key)

    out = require_writable_dir("out", cfg.get("out") or Path(dirs[0]) / "report")
    flat = jobs.drop(columns=["class_names", "override_keys"], errors="ignore")
    flat.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)

    figures: list[Path] = []
    plot_cfg = cfg.get("plots") or {}
    if plot_cfg.get("sweeps", True):
        for key in plots.numeric_keys(jobs[jobs["status"] == "completed"], rows):
            for metric in metrics:
                path = out / f"{plots.safe_name(metric)}_vs_{plots.safe_name(key)}.png"
                if plots.metric_vs_value(jobs, key, metric, [r for r in rows if r != key], path):
                    figures.append(path)
    if plot_cfg.get("pr_curves", True):
        path = plots.pr_curves(jobs, load_predictions(jobs), out / "pr_curves.png")
        if path:
            figures.append(path)

    title = cfg.get("title") or f"Report: {', '.join(map(str, dirs))}"
    text = [f"# {title}\n", f"Rows: {', '.join(rows) or '-'}; columns: {', '.join(columns) or '-'}; "
            f"{(jobs['status'] == 'completed').sum()} completed of {len(jobs)} jobs.\n",
            to_markdown(summary, rows_title=", ".join(rows) or "row", decimals=int(cfg.get("decimals", 1)))]
    if delta:
        text.append(f"Δ{delta['metric']}: value of row `{delta['reference']}` (same seed and column) minus the "
                    "row's value; lower is a smaller drop.\n")
    if skipped:
        text.append(f"Not logged by these jobs (left out): {', '.join(skipped)}.\n")
    if empty:
        text.append(f"No value in any job (–): {', '.join(empty)} (e.g. no small defects, no rare classes, no "
                    "masks or boxes to measure areas on).\n")
    failed = jobs[jobs["status"] != "completed"]
    if len(failed):
        text.append("## Jobs that did not complete\n")
        text.append(f"| job | status | {', '.join(rows) or 'row'} | {seed_key} | error |\n|---|---|---|---|---|")
        for r in failed.to_dict("records"):
            error = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")[:200]
            text.append(f"| {r['job']} | {r['status']} | {r['row']} | {r.get(seed_key)} | {error} |")
        text.append("")
    if figures:
        text.append("## Figures\n")
        text.extend(f"![{p.stem}]({p.name})" for p in figures)
        text.append("")
    markdown = "\n".join(text)
    (out / "report.md").write_text(markdown)
    return {"out": out, "markdown": markdown, "summary": summary, "jobs": jobs, "figures": figures}


def main(cfg: Mapping[str, Any], echo: bool = True) -> dict[str, Any]:
    result = make_report(cfg)
    if echo:
        print(result["markdown"])
        print(f"written to {result['out']}")
    return result


__all__: Sequence[str] = ["make_report", "main", "resolve_layout"]
