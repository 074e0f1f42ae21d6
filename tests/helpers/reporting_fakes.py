"""Fake multirun folders with known numbers, laid out exactly like ``train.py -m`` leaves them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

CLASSES = ["good", "crack", "pore"]


def make_job(
    root: Path,
    num: int,
    overrides: Sequence[str],
    metrics: Mapping[str, float] | None = None,
    choices: Mapping[str, str] | None = None,
    status: str = "completed",
    predictions: pd.DataFrame | None = None,
    labelled: Mapping[str, int] | None = None,
    adaptation_s: float = 10.0,
    write_record: bool = True,
) -> Path:
    """One job folder ``root/<num>`` with ``.hydra/{config,overrides,hydra}.yaml`` and ``metrics.json``."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    values = dict(o.split("=", 1) for o in overrides)
    config = {"task_name": "fake", "seed": int(values.get("seed", 0)), "data": {"label_budget": {"total": 50}},
              "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    hydra = {"hydra": {"runtime": {"choices": {"model": "supervised", "data": "synthetic_awdd", **(choices or {})}}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if not write_record:
        return job
    record = {
        "status": status,
        "metrics": dict(metrics or {}),
        "wall_time_s": {"stages": 1.0, "fit": adaptation_s - 1.0, "adaptation": adaptation_s, "test": 1.0},
        "class_names": CLASSES,
        "normal_class": "good",
        "split_counts": {"target_labeled": dict(labelled or {"good": 10, "crack": 6, "pore": 2})},
    }
    if status == "failed":
        record["error"] = "RuntimeError: boom"
    (job / "metrics.json").write_text(json.dumps(record))
    if predictions is not None:
        predictions.to_csv(job / "test_predictions.csv", index=False)
    return job


def predictions(targets: Sequence[int], preds: Sequence[int], areas: Sequence[float]) -> pd.DataFrame:
    """A ``test_predictions.csv`` frame; probabilities put 0.8 on the predicted class."""
    frame = pd.DataFrame({"index": range(len(targets)), "target": targets, "pred": preds})
    for k, name in enumerate(CLASSES):
        frame[f"prob_{name}"] = [0.8 if p == k else 0.1 for p in preds]
    frame["defect_area"] = areas
    return frame
