"""Read the jobs of one or more multirun (or run) folders into one table.

A job is any folder holding ``.hydra/config.yaml``. For each job this reads

* ``.hydra/overrides.yaml`` (what the command line and the sweeper set) and ``.hydra/hydra.yaml`` (the config
  group choices: ``model``, ``data``, ``experiment``, ...);
* ``metrics.json`` written by :mod:`madd.pipeline` (status, final metrics, stage wall times, split counts), or,
  for runs without one, the CSV logger's ``csv/version_*/metrics.csv`` (last value of each ``test/`` and ``val/``
  column; ``val/<m>_best`` is the best epoch's value);
* ``test_predictions.csv`` for the small/rare defect detection rates (:mod:`madd.reporting.defects`).

Columns of the returned frame: ``job`` (path relative to the root), ``status``, ``error``, one column per config
group choice and per override key (values parsed as YAML, so ``0.05`` is a float), any extra config keys asked
for, the metrics (``test/mAP``, ``val/mAP_best``, ...), ``test/DR_small``, ``test/DR_rare``, ``DAT_s`` (the
adaptation wall time), ``params`` (all the module's parameters), ``test_images_per_s`` and the deployed network's
``deploy_params``, ``flops``, ``latency_ms`` and ``fps`` (:mod:`madd.deploy.cost`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import OmegaConf

from madd.errors import MaddConfigError
from madd.reporting import defects
from madd.reporting.run_record import METRICS_FILE, PREDICTIONS_FILE

CHOICE_GROUPS = ("model", "data", "experiment", "trainer", "hparams_search", "model/backbone")
LOWER_IS_BETTER = ("loss", "FAR")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_job_dirs(roots: str | Path | Iterable[str | Path]) -> list[Path]:
    """Every job folder under the given roots, in natural order (``2`` before ``10``)."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    jobs: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            raise MaddConfigError(f"dir={root}: no such folder; give a multirun folder "
                                  "(logs/<task_name>/multiruns/<date>) or a run folder")
        jobs.update(p.parent.parent for p in root.rglob(".hydra/config.yaml"))
    if not jobs:
        raise MaddConfigError(f"dir={', '.join(map(str, roots))}: no job folders (with .hydra/config.yaml) inside; "
                              "point it at the folder train.py -m printed")
    return sorted(jobs, key=_natural_key)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(lines: Sequence[str]) -> dict[str, Any]:
    """``["model.lr=0.1", "+x=1", "~y"]`` -> ``{"model.lr": 0.1, "x": 1}`` (deletions dropped)."""
    out = {}
    for line in lines:
        if "=" not in line or line.startswith("~"):
            continue
        key, value = line.split("=", 1)
        out[key.lstrip("+")] = _parse_value(value)
    return out


def metrics_from_csv(job: Path) -> dict[str, float]:
    """Final ``test/``/``val/`` values and ``val/*_best`` from the CSV logger (runs without ``metrics.json``)."""
    files = sorted(job.glob("csv/version_*/metrics.csv"), key=_natural_key)
    if not files:
        return {}
    frame = pd.read_csv(files[-1])
    out: dict[str, float] = {}
    for col in frame.columns:
        if not col.startswith(("test/", "val/")):
            continue
        values = frame[col].dropna()
        if values.empty:
            continue
        out[col] = float(values.iloc[-1])
        if col.startswith("val/"):
            out[f"{col}_best"] = float(values.min() if col.endswith(LOWER_IS_BETTER) else values.max())
    return out


def _select(config, key: str) -> Any:
    try:
        value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    except Exception:  # interpolations to ${hydra:...} cannot resolve outside a Hydra run
        return None
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def special_defect_rates(job: Path, record: dict, small_fraction: float, rare_below: int) -> dict[str, float]:
    """``test/DR_small``, ``test/DR_rare`` and ``test/DR/<class>`` from the job's ``test_predictions.csv``."""
    path = job / PREDICTIONS_FILE
    class_names = record.get("class_names") or []
    if not path.is_file() or not class_names:
        return {}
    frame = pd.read_csv(path)
    normal = record.get("normal_class")
    normal_index = class_names.index(normal) if normal in class_names else None
    out = {"test/DR_small": defects.small_defect_rate(frame, normal_index, small_fraction)}
    labelled = (record.get("split_counts") or {}).get("target_labeled")
    if labelled is not None:
        rare = defects.rare_classes(labelled, normal, rare_below)
        out["test/DR_rare"] = defects.rare_defect_rate(frame, class_names, normal_index, rare) if rare else math.nan
    for name, value in defects.per_class_detection_rate(frame, class_names, normal_index).items():
        out[f"test/DR/{name}"] = value
    return out


def load_job(job: Path, root: Path | None = None, extra_keys: Sequence[str] = (), small_fraction: float = 0.01,
             rare_below: int = 5) -> dict[str, Any]:
    """One row of the jobs table (see the module docstring)."""
    hydra_dir = job / ".hydra"
    config = OmegaConf.load(hydra_dir / "config.yaml")
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    choices: dict[str, Any] = {}
    if (hydra_dir / "hydra.yaml").is_file():
        hydra_cfg = yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) or {}
        choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    label = job.relative_to(root) if root and job != root and job.is_relative_to(root) else Path(job.parent.name, job.name)
    row: dict[str, Any] = {"job": str(label), "path": str(job)}
    row.update({g: choices.get(g) for g in CHOICE_GROUPS if g in choices})
    row["task_name"] = _select(config, "task_name")
    row["seed"] = _select(config, "seed")
    for key in extra_keys:
        row[key] = choices.get(key, _select(config, key))
    swept = parse_overrides(overrides)
    row.update(swept)  # the overrides win: they are what the user set
    row["overrides"] = " ".join(o for o in overrides if not o.startswith("seed="))
    row["override_keys"] = sorted(swept)

    record_file = job / METRICS_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    metrics = {k: (math.nan if v is None else float(v)) for k, v in (record.get("metrics") or {}).items()}
    if not record:
        metrics = metrics_from_csv(job)
    status = record.get("status") or ("completed" if any(k.startswith("test/") for k in metrics) else "incomplete")
    row.update(status=status, error=record.get("error"))
    row.update(metrics)
    wall = record.get("wall_time_s") or {}
    if "adaptation" in wall:
        row["DAT_s"] = float(wall["adaptation"])
    for key in ("params", "test_images_per_s", "deploy_params", "flops", "latency_ms", "fps"):
        if key in record:
            row[key] = record[key]
    row["class_names"] = record.get("class_names")
    row["normal_class"] = record.get("normal_class")
    if status == "completed":
        row.update(special_defect_rates(job, record, small_fraction, rare_below))
    return row


def collect(roots: str | Path | Iterable[str | Path], extra_keys: Sequence[str] = (), small_fraction: float = 0.01,
            rare_below: int = 5) -> pd.DataFrame:
    """The jobs table of every job under ``roots`` (one row per job)."""
    roots_list = [roots] if isinstance(roots, (str, Path)) else list(roots)
    common = Path(roots_list[0]) if len(roots_list) == 1 else None
    rows = [load_job(j, common, extra_keys, small_fraction, rare_below) for j in find_job_dirs(roots_list)]
    return pd.DataFrame(rows)


def load_predictions(jobs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``job -> test_predictions.csv`` frame for the completed jobs that wrote one."""
    out = {}
    for job, path in jobs.loc[jobs["status"] == "completed", ["job", "path"]].itertuples(index=False):
        if (Path(path) / PREDICTIONS_FILE).is_file():
            out[job] = pd.read_csv(Path(path) / PREDICTIONS_FILE)
    return out
