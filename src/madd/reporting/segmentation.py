"""Report of a U-Net backbone multirun: the paper's Table I/II shape, Tukey HSD tables and box plots.

    madd segmentation-report dir=logs/unet_backbones_cpu/multiruns/<time>
        [out=<dir>/seg_report] [alpha=0.05] [flops_size=[224,224]]

Reads every job of the multirun (``<job>/.hydra/config.yaml`` for the backbone and seed; the test metrics from
``<job>/csv/version_0/metrics.csv``, else ``<job>/metrics.json``) and writes into ``out``:

* ``runs.csv``: one row per job (backbone, seed, per-image F1/IoU means, pixel AUROC, DR/FAR, training time);
* ``backbones.md`` / ``backbones.csv``: per backbone (Tables I and II of the paper): parameters and FLOPs of
  the whole segmentation network at ``flops_size`` (torch's ``FlopCounterMode``; 1 multiply-add = 2 FLOPs),
  training time in minutes, and mean ± std over runs of the per-image F1 and IoU (each run's value is the
  mean over its test images, so the std is between runs, as in the paper's "over 10 runs");
* ``tukey_f1.md/.csv`` and ``tukey_iou.md/.csv``: Tukey HSD pairwise comparisons (``scipy.stats.tukey_hsd``)
  of the per-run F1 and IoU between backbones (Tables III and IV);
* ``boxplots.png``: per-run F1 and IoU per backbone.

The table functions are pure (pandas DataFrame in, DataFrame out), for reuse by other reports.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from madd.errors import MaddConfigError
from madd.models.segmentation.torch_model import SegmentationNet, output_channels

log = logging.getLogger(__name__)

#: runs.csv column -> the logged test metric
RUN_METRICS = {
    "f1": "test/pixel_f1",
    "iou": "test/pixel_iou",
    "f1_defective": "test/pixel_f1_defective",
    "iou_defective": "test/pixel_iou_defective",
    "pixel_auroc": "test/pixel_auroc",
    "DR": "test/DR",
    "FAR": "test/FAR",
    "train_time_s": "test/train_time_s",
}
METRIC_TITLES = {"f1": "F1", "iou": "IoU", "f1_defective": "F1 (defective)", "iou_defective": "IoU (defective)",
                 "pixel_auroc": "Pixel AUROC", "DR": "DR", "FAR": "FAR"}


# ----------------------------------------------------------------------------------------------- reading
def last_logged(metrics_csv: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning ``CSVLogger`` ``metrics.csv``."""
    frame = pd.read_csv(metrics_csv)
    out = {}
    for col in frame.columns:
        values = frame[col].dropna()
        if len(values):
            out[col] = float(values.iloc[-1])
    return out


def read_job(job_dir: Path) -> dict | None:
    """One job's backbone, seed and test metrics; ``None`` when it logged no test metrics (failed run)."""
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    model, data = cfg.get("model", {}), cfg.get("data", {})
    csvs = sorted(job_dir.glob("csv/version_*/metrics.csv"))
    metrics: dict[str, float] = {}
    if csvs:
        metrics = last_logged(csvs[-1])
    elif (job_dir / "metrics.json").is_file():
        metrics = {k: v for k, v in json.loads((job_dir / "metrics.json").read_text()).get("metrics", {}).items()
                   if v is not None}
    if RUN_METRICS["f1"] not in metrics:
        return None
    arch, encoder = str(model.get("arch", "Unet")), str(model.get("encoder_name"))
    row = {
        "job": job_dir.name,
        "arch": arch,
        "encoder": encoder,
        "seed": cfg.get("seed"),
        "mode": str(model.get("mode", "binary")),
        "num_classes": len(data.get("class_names", []) or []),
        "has_normal": data.get("normal_class") is not None,
        "encoder_depth": int(model.get("encoder_depth", 5)),
        "arch_options": json.dumps(OmegaConf.to_container(model.arch_options) if model.get("arch_options") else {},
                                   sort_keys=True),
    }
    row.update({col: metrics.get(name, math.nan) for col, name in RUN_METRICS.items()})
    return row


def collect_runs(root: str | Path) -> pd.DataFrame:
    """All finished jobs under a multirun folder, with a ``backbone`` label per (architecture, encoder)."""
    root = Path(root)
    if not root.is_dir():
        raise MaddConfigError(f"dir={root}: no such folder; give the multirun folder (logs/<task>/multiruns/<time>)")
    jobs = sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")})
    rows, failed = [], []
    for job in jobs:
        row = read_job(job)
        (rows.append(row) if row else failed.append(job.name))
    if failed:
        log.warning("jobs without test metrics (failed or unfinished), left out: %s", failed)
    if not rows:
        raise MaddConfigError(f"dir={root}: no job with test metrics (looked for */.hydra/config.yaml and "
                              "csv/version_*/metrics.csv); run `python train.py experiment=unet_backbones_cpu` first")
    runs = pd.DataFrame(rows)
    several_archs = runs["arch"].nunique() > 1
    runs["backbone"] = [f"{a}-{e}" if several_archs else e for a, e in zip(runs["arch"], runs["encoder"])]
    return runs.sort_values(["backbone", "seed"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- cost
def model_cost(arch: str, encoder: str, channels: int, encoder_depth: int = 5, size: Sequence[int] = (224, 224),
               arch_options: Mapping | None = None) -> dict[str, float]:
    """Parameters and forward FLOPs (``torch.utils.flop_counter``, 2 per multiply-add) of one network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode


    net = SegmentationNet(arch, encoder, None, channels, encoder_depth, None, arch_options).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, int(size[0]), int(size[1])))
    return {"params": float(sum(p.numel() for p in net.parameters())), "flops": float(counter.get_total_flops())}


def backbone_costs(runs: pd.DataFrame, size: Sequence[int] = (224, 224)) -> pd.DataFrame:
    """``model_cost`` of each backbone of ``runs`` (one network per backbone), indexed by backbone."""

    rows = {}
    for backbone, r in runs.groupby("backbone").first().iterrows():
        channels = output_channels(r["mode"], int(r["num_classes"]), 0 if r["has_normal"] else None)
        rows[backbone] = model_cost(r["arch"], r["encoder"], channels, int(r["encoder_depth"]), size,
                                    json.loads(r["arch_options"]))
    return pd.DataFrame.from_dict(rows, orient="index")


# ----------------------------------------------------------------------------------------------- tables
def summary_table(runs: pd.DataFrame, metrics: Sequence[str] = ("f1", "iou"), group: str = "backbone",
                  costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per group: number of runs, mean and std (between runs, ddof=1) of each metric and of the training time
    in minutes; plus ``params`` and ``flops`` columns from ``costs`` when given. One row per group."""
    g = runs.groupby(group)
    out = pd.DataFrame({"runs": g.size()})
    if costs is not None:
        out = out.join(costs[["params", "flops"]])
    minutes = runs.assign(train_time_min=runs["train_time_s"] / 60.0).groupby(group)["train_time_min"]
    out["train_time_min_mean"], out["train_time_min_std"] = minutes.mean(), minutes.std(ddof=1)
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_std"] = g[m].mean(), g[m].std(ddof=1)
    return out


def tukey_table(runs: pd.DataFrame, metric: str, group: str = "backbone", alpha: float = 0.05) -> pd.DataFrame:
    """Tukey HSD pairwise comparisons of ``metric`` between the groups (``scipy.stats.tukey_hsd``).

    One row per unordered pair, groups in alphabetical order: ``model_1``, ``model_2``, ``mean_diff``
    (mean of model 1 minus model 2), ``p_value``, the ``1 - alpha`` confidence interval of the difference and
    ``significant`` (``p_value < alpha``). Needs at least two groups with two finite values each; when every
    value is the same (e.g. every run predicts empty masks) the p-values are NaN (0/0), not significant.
    """
    groups = {name: v[metric].dropna().to_numpy(float) for name, v in runs.groupby(group)}
    groups = {k: v for k, v in sorted(groups.items()) if len(v) >= 2}
    if len(groups) < 2:
        raise MaddConfigError(f"Tukey HSD of {metric} needs two or more backbones with two or more runs each; "
                              f"have {({k: len(v) for k, v in groups.items()})}: run more seeds")
    names = list(groups)
    with np.errstate(divide="ignore", invalid="ignore"):  # no variance: 0/0 gives NaN p-values, d/0 gives 0
        res = stats.tukey_hsd(*groups.values())
    ci = res.confidence_interval(confidence_level=1 - alpha)
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            p = float(res.pvalue[i, j])
            rows.append({"model_1": names[i], "model_2": names[j], "mean_diff": float(res.statistic[i, j]),
                         "p_value": p, "ci_low": float(ci.low[i, j]), "ci_high": float(ci.high[i, j]),
                         "significant": bool(p < alpha)})
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"


def format_p(p: float) -> str:
    """The paper's style: four decimals, ``<0.0001`` below that; ``n/a`` when undefined (no variance)."""
    if not math.isfinite(p):
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def summary_display(summary: pd.DataFrame, metrics: Sequence[str], size: Sequence[int]) -> pd.DataFrame:
    """``summary_table`` as the paper prints it (``mean ± std`` strings, M parameters, G FLOPs)."""
    out = pd.DataFrame(index=summary.index)
    out.index.name = "Backbone"
    out["Runs"] = summary["runs"].astype(int)
    if "params" in summary:
        out["Params (M)"] = (summary["params"] / 1e6).map("{:.2f}".format)
        out[f"FLOPs (G) @{size[0]}x{size[1]}"] = (summary["flops"] / 1e9).map("{:.2f}".format)
    out["Train time (min)"] = [_pm(m, s) for m, s in zip(summary["train_time_min_mean"], summary["train_time_min_std"])]
    for m in metrics:
        out[METRIC_TITLES.get(m, m)] = [_pm(a, b) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    return out.reset_index()


def tukey_display(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``tukey_table`` as the paper prints it (Tables III/IV) plus the difference and its interval."""
    return pd.DataFrame({
        "Model 1": table["model_1"], "Model 2": table["model_2"],
        "Mean diff": table["mean_diff"].map("{:+.4f}".format),
        f"{100 * (1 - alpha):g}% CI": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(table["ci_low"], table["ci_high"])],
        "p-value": table["p_value"].map(format_p),
        "Significant": table["significant"].map({True: "Yes", False: "No"}),
    })


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs ``tabulate``, which is not a dependency)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- plots
def box_plots(runs: pd.DataFrame, path: str | Path, metrics: Sequence[str] = ("f1", "iou"),
              group: str = "backbone") -> Path:
    """One box plot per metric of the per-run values per group, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(runs[group].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        data = [runs.loc[runs[group] == n, m].dropna().to_numpy() for n in names]
        ax.boxplot(data, tick_labels=names)
        ax.set_title(f"per-image {METRIC_TITLES.get(m, m)} (one point per run)")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- command
def write_report(root: str | Path, out: str | Path | None = None, alpha: float = 0.05,
                 flops_size: Sequence[int] = (224, 224), metrics: Sequence[str] = ("f1", "iou")) -> dict[str, Path]:
    """Collect the runs under ``root`` and write every table and plot into ``out``; returns the paths."""
    runs = collect_runs(root)
    out = Path(out) if out else Path(root) / "seg_report"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"runs": out / "runs.csv"}
    runs.to_csv(paths["runs"], index=False)
    shown = [m for m in (*metrics, "f1_defective", "iou_defective", "pixel_auroc") if runs[m].notna().any()]
    summary = summary_table(runs, shown, costs=backbone_costs(runs, flops_size))
    summary.to_csv(out / "backbones.csv")
    display = summary_display(summary, shown, flops_size)
    paths["backbones"] = out / "backbones.md"
    paths["backbones"].write_text(
        f"Mean ± std over runs of the per-image test metrics ({len(runs)} runs under {root}).\n\n" + markdown(display))
    for m in metrics:
        try:
            table = tukey_table(runs, m, alpha=alpha)
        except MaddConfigError as err:
            log.warning("%s", err)
            continue
        table.to_csv(out / f"tukey_{m}.csv", index=False)
        paths[f"tukey_{m}"] = out / f"tukey_{m}.md"
        paths[f"tukey_{m}"].write_text(f"Tukey HSD pairwise comparison of per-image {METRIC_TITLES[m]} between "
                                       f"backbones (alpha = {alpha}).\n\n" + markdown(tukey_display(table, alpha)))
    paths["boxplots"] = box_plots(runs, out / "boxplots.png", metrics)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv))
    if "dir" not in args:
        print(__doc__, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = write_report(args.dir, args.get("out"), float(args.get("alpha", 0.05)),
                             list(args.get("flops_size", [224, 224])))
    except MaddConfigError as err:
        print(f"madd error: {err}", file=sys.stderr)
        return 2
    for name in ("backbones", "tukey_f1", "tukey_iou"):
        if name in paths:
            print(paths[name].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
