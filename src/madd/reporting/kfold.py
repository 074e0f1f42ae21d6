"""Mean ± std over the folds of a k-fold multirun (the pruned-ResNet paper's Tables I and II, III).

    madd kfold-summary dir=logs/wool_resnet_kfold/multiruns/<time> [dir=<another>] [out=<folder>]

Every job folder of the multirun(s) holding ``.hydra/overrides.yaml`` is read:

* its *setting* is its overrides without ``data.fold`` (e.g. ``model/backbone=resnet18 model/optimizer=sgd``);
* its rows are the stages of ``pruning/report.csv`` (``baseline``, ``round 1..3`` for L1 pruning; ``unpruned``,
  ``final`` for SFP/ASFP) and ``test`` from ``metrics.json`` (the model the run ended with).

The result, one row per (setting, stage) with ``n`` folds and mean/std of each metric (metrics and their
``*_change`` in percentage points, costs as numbers), goes to ``<out>/kfold_summary.{csv,md}`` (``out``
defaults to the first ``dir``) and is printed. Failed jobs (``metrics.json`` status ``failed``) are counted
and listed, not averaged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from madd.errors import MaddConfigError

FOLD_KEYS = ("data.fold", "+data.fold")
METRICS = ("accuracy", "mAP", "DR", "FAR", "f1", "auroc")
SUMMARY_COLUMNS = (
    "accuracy", "accuracy_change", "mAP", "mAP_change", "DR", "DR_change", "FAR", "FAR_change",
    "params", "macs", "flops_ratio", "latency_b1_ms", "latency_b1_ms_ratio", "throughput_b32",
)


def job_dirs(root: Path) -> list[Path]:
    return sorted(p.parent.parent for p in root.rglob(".hydra/overrides.yaml"))


def setting_of(job: Path) -> tuple[list[str], int | None]:
    """(the overrides without the fold, sorted; the fold) of one job."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    fold, rest = None, []
    for item in overrides:
        key, _, value = str(item).partition("=")
        if key in FOLD_KEYS:
            fold = int(value)
        else:
            rest.append(str(item))
    return sorted(rest), fold


def job_rows(job: Path) -> tuple[list[dict], str]:
    """The stage rows of one job and its status (``completed``, ``failed`` or ``missing``)."""
    rows: list[dict] = []
    status = "missing"
    record = job / "metrics.json"
    if record.is_file():
        data = json.loads(record.read_text())
        status = data.get("status", "completed")
        if status == "completed":
            test = {k.split("/", 1)[1]: v for k, v in data.get("metrics", {}).items() if k.startswith("test/")}
            if test:
                rows.append({"stage": "test", **test})
    report = job / "pruning" / "report.csv"
    if report.is_file() and status != "failed":
        rows.extend(pd.read_csv(report).to_dict("records"))
        status = "completed"
    return rows, status


def summarize(dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    """The (setting, stage) table over all jobs of ``dirs`` and the list of failed/empty jobs.

    A setting is named by the overrides that differ between jobs; those shared by all are in ``df.attrs["common"]``.
    """
    jobs_found = []
    for d in dirs:
        root = Path(d).expanduser()
        jobs = job_dirs(root) if root.is_dir() else []
        if not jobs:
            raise MaddConfigError(f"dir={root} holds no Hydra job folders (.hydra/overrides.yaml); give a multirun folder")
        jobs_found.extend((job, *setting_of(job)) for job in jobs)
    common = set.intersection(*(set(items) for _, items, _ in jobs_found))
    records, problems = [], []
    for job, items, fold in jobs_found:
        rows, status = job_rows(job)
        if status != "completed" or not rows:
            problems.append(f"{job} ({status})")
            continue
        setting = " ".join(i for i in items if i not in common) or "(all jobs)"
        for row in rows:
            records.append({"setting": setting, "fold": fold, **row})
    if not records:
        raise MaddConfigError(f"no finished job under {list(map(str, dirs))}: {problems[:5]}")
    df = pd.DataFrame(records)
    for col in METRICS:  # metrics as percentages, like the paper's tables
        if col in df:
            df[col] = df[col] * 100.0
    keys = ("setting", "fold", "stage", "epochs_trained")
    value_cols = [c for c in df.columns if c not in keys and pd.api.types.is_numeric_dtype(df[c])]
    order = {s: i for i, s in enumerate(dict.fromkeys(df["stage"]))}
    grouped = df.groupby(["setting", "stage"], sort=False)
    out = grouped[value_cols].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out.insert(0, "n", grouped.size())
    out = out.reset_index()
    out["_order"] = out["stage"].map(order)
    out = out.sort_values(["setting", "_order"]).drop(columns="_order").reset_index(drop=True)
    out.attrs["common"] = sorted(common)
    return out, problems


def _cell(row: pd.Series, col: str) -> str:
    mean, std = row.get(f"{col}_mean"), row.get(f"{col}_std")
    if mean is None or pd.isna(mean):
        return "–"
    if col in ("params", "macs", "flops"):
        return f"{mean:.2e}"
    if col.endswith("_ratio"):
        return f"{mean:.3f}"
    std_text = "" if std is None or pd.isna(std) else f" ± {std:.2f}"
    sign = "+" if col.endswith("_change") else ""
    return f"{mean:{sign}.2f}{std_text}"


def to_markdown(summary: pd.DataFrame) -> str:
    cols = [c for c in SUMMARY_COLUMNS if f"{c}_mean" in summary]
    lines = ["| setting | stage | n | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for _, row in summary.iterrows():
        cells = " | ".join(_cell(row, c) for c in cols)
        lines.append(f"| {row['setting']} | {row['stage']} | {int(row['n'])} | {cells} |")
    return "\n".join(lines)


def write_summary(dirs: Sequence[str | Path], out: str | Path | None = None) -> pd.DataFrame:
    summary, problems = summarize(dirs)
    out_dir = Path(out or dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "kfold_summary.csv", index=False)
    common = " ".join(summary.attrs.get("common", [])) or "(none)"
    text = ("# k-fold summary\n\nmean ± std over folds; metrics in %, *_change in points against each run's first "
            "pruning stage (negative = worse); `test` = the model each run ended with. Overrides shared by every job: "
            f"`{common}`.\n\n" + to_markdown(summary) + "\n")
    if problems:
        text += "\nNot averaged (failed or unfinished): " + ", ".join(problems) + "\n"
    (out_dir / "kfold_summary.md").write_text(text)
    print(text)
    return summary


def parse_args(argv: Sequence[str]) -> tuple[list[str], str | None]:
    dirs, out = [], None
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("dir", "out"):
            raise MaddConfigError(
                f"unknown argument {arg!r}; usage: kfold_summary dir=<multirun folder> [dir=...] [out=<folder>]")
        if key == "dir":
            dirs.extend(v for v in value.split(",") if v)
        else:
            out = value
    if not dirs:
        raise MaddConfigError("give the multirun folder: madd kfold-summary dir=<folder>")
    return dirs, out


def main(argv: Sequence[str] | None = None) -> None:
    try:
        dirs, out = parse_args(sys.argv[1:] if argv is None else argv)
        write_summary(dirs, out)
    except MaddConfigError as err:
        print(f"madd error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
