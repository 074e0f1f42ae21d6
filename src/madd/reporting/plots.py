"""PNG figures: a metric against a swept numeric value with error bars (the paper's Fig. 5 loss-weight
sensitivity, the label-budget curve of Table 2) and precision-recall curves pooled over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402

from madd.reporting.tables import is_percent, metric_title  # noqa: E402


def numeric_keys(jobs: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The keys whose values are all numbers (not bools) with at least two distinct values."""
    out = []
    for key in keys:
        values = jobs[key].dropna() if key in jobs else pd.Series(dtype=object)
        if len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if values.nunique() > 1:
                out.append(key)
    return out


def metric_vs_value(jobs: pd.DataFrame, x_key: str, metric: str, group_keys: Sequence[str], path: Path,
                    title: str | None = None) -> Path | None:
    """``metric`` (mean ± std over seeds) against ``x_key``; one line per combination of ``group_keys`` and
    column. Returns ``None`` when there is nothing to draw."""
    done = jobs[(jobs["status"] == "completed") & jobs[x_key].notna()] if metric in jobs else jobs.iloc[0:0]
    done = done.dropna(subset=[metric]) if metric in done else done
    if done.empty or done[x_key].nunique() < 2:
        return None
    scale = 100.0 if is_percent(metric) else 1.0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups = [k for k in group_keys if k in done and k != x_key]
    by = [*groups, "column"] if done["column"].nunique() > 1 else groups
    parts = done.groupby(by, dropna=False) if by else [((), done)]
    for name, part in parts:
        stats = part.groupby(x_key)[metric].agg(["mean", "std", "count"]).sort_index()
        name = name if isinstance(name, tuple) else (name,)
        label = " ".join(f"{k}={v}" for k, v in zip(by, name)) or None
        ax.errorbar(stats.index.astype(float), stats["mean"] * scale, yerr=stats["std"].fillna(0) * scale,
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric_title(metric))
    ax.set_title(title or f"{metric_title(metric)} vs {x_key} (mean ± std over seeds)", fontsize=9)
    if by:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def defect_scores(frame: pd.DataFrame, class_names: Sequence[str], normal_class: str | None):
    """``(y_true, score)`` of the PR curve of one run's predictions: defective vs normal with score
    ``1 - p(normal)`` when there is a normal class; otherwise micro-averaged one-vs-rest over the classes."""
    # the probability columns in file order (a segmentation model names its own classes)
    probs = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    target = frame["target"].to_numpy(dtype=int)
    if normal_class in class_names:
        k = list(class_names).index(normal_class)
        return (target != k).astype(int), 1.0 - probs[:, k]
    onehot = np.eye(probs.shape[1], dtype=int)[target]
    return onehot.ravel(), probs.ravel()


def pr_curves(jobs: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], path: Path) -> Path | None:
    """One panel per column, one curve per row (predictions of its seeds pooled), AP in the legend."""
    done = jobs[(jobs["status"] == "completed") & jobs["job"].isin(list(predictions))]
    if done.empty:
        return None
    columns = list(dict.fromkeys(done["column"]))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.8), squeeze=False)
    for ax, column in zip(axes[0], columns):
        part = done[done["column"] == column]
        for row, group in part.groupby("row", sort=False):
            y_parts, s_parts = [], []
            for record in group.to_dict("records"):
                y, s = defect_scores(predictions[record["job"]], record["class_names"], record["normal_class"])
                y_parts.append(y)
                s_parts.append(s)
            y, s = np.concatenate(y_parts), np.concatenate(s_parts)
            if y.min() == y.max():
                continue
            precision, recall, _ = precision_recall_curve(y, s)
            ap = average_precision_score(y, s)
            ax.step(recall, precision, where="post", label=f"{row or 'all'} (AP={ap:.3f}, {len(group)} runs)")
        first = part.iloc[0]
        kind = "defective vs normal" if first["normal_class"] else "micro one-vs-rest"
        ax.set_title(f"{column + ': ' if column else ''}PR, {kind}", fontsize=9)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def safe_name(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return out.strip("_") or "plot"
