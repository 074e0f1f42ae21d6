"""What a finished or failed run leaves in its output folder for ``report.py``.

``metrics.json``::

    {"status": "completed" | "failed" | "interrupted",
     "metrics": {"test/mAP": ..., "val/mAP": ..., "val/mAP_best": ...},
     "wall_time_s": {"stages": s, "fit": s, "adaptation": s, "test": s},
     "split_counts": {"target_labeled": {"good": 4, ...}, ...},
     "class_names": [...], "normal_class": "good" | null,
     "params": n_parameters, "test_images_per_s": x,
     "deploy_params": n, "flops": n, "latency_ms": x, "fps": x,   # madd.deploy.cost, when measured
     "error": "ExceptionType: message",            # failed and interrupted runs only
     "resume": {"ckpt_path": ..., "command": ...}} # interrupted runs: the last.ckpt and the command resuming it

``adaptation`` is the domain adaptation time (DAT): the wall time of the method's extra stages
(``stages()``, e.g. MADD's transfer initialisation) plus the main fit.

``test_predictions.csv``: one row per test image with ``index``, ``target``, ``pred``, ``prob_<class>`` and
``defect_area``, the fraction of the image the defect covers (mask pixels when the dataset has masks or
polygons, else the union of its boxes; 0 for normal images; empty when the dataset has image labels only).
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.csv"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def defect_area_fraction(sample: Mapping[str, Any], normal_index: int | None) -> float:
    """Fraction of the image covered by the defect in one decoded sample (see the module docstring)."""
    if normal_index is not None and int(sample["label"]) == normal_index:
        return 0.0
    mask = sample["mask"]
    if bool(sample["has_mask"]):
        return float(mask.float().mean())
    boxes = sample["boxes"]
    if len(boxes) == 0:
        return math.nan
    h, w = mask.shape[-2:]
    canvas = np.zeros((h, w), dtype=bool)
    for _, x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64):
        canvas[max(int(math.floor(y1)), 0):int(math.ceil(y2)), max(int(math.floor(x1)), 0):int(math.ceil(x2))] = True
    return float(canvas.mean())


def predictions_frame(test_outputs: Mapping[str, Any], dataset, class_names: list[str], normal_index: int | None):
    """Per-image test predictions (a pandas DataFrame) from a module's ``test_outputs`` and the test dataset.

    ``test_outputs`` holds ``probs`` ``(N, K)``, ``target`` ``(N,)`` and ``index`` ``(N,)`` (positions in the test
    dataset) as the base :class:`~madd.models.base.DefectModule` collects them.
    """
    import pandas as pd

    probs = np.asarray(test_outputs["probs"], dtype=np.float64)
    target = np.asarray(test_outputs["target"], dtype=np.int64)
    index = np.asarray(test_outputs["index"], dtype=np.int64) if "index" in test_outputs else np.arange(len(target))
    frame = pd.DataFrame({"index": index, "target": target, "pred": probs.argmax(1)})
    for k, name in enumerate(class_names):
        frame[f"prob_{name}"] = probs[:, k]
    frame["defect_area"] = [defect_area_fraction(dataset[int(i)], normal_index) for i in index]
    return frame


def write_run_record(
    output_dir: str | Path,
    metrics: Mapping[str, float],
    wall_time_s: Mapping[str, float],
    datamodule=None,
    model=None,
    best_scores: Mapping[str, float] | None = None,
    cost: Mapping[str, float] | None = None,
) -> Path:
    """Write ``metrics.json`` (and ``test_predictions.csv`` when the model kept test outputs)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "status": "completed",
        "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
        "wall_time_s": {k: round(float(v), 3) for k, v in wall_time_s.items()},
    }
    for name, value in (best_scores or {}).items():
        record["metrics"][f"{name}_best"] = _finite_or_none(value)
    class_names = list(getattr(datamodule, "class_names", []) or getattr(model, "class_names", []) or [])
    normal_index = getattr(datamodule, "normal_index", getattr(model, "normal_index", None))
    record["class_names"] = class_names
    record["normal_class"] = class_names[normal_index] if normal_index is not None and class_names else None
    if datamodule is not None and getattr(datamodule, "records", None):
        record["split_counts"] = datamodule.summary()
    if model is not None:
        record["params"] = int(sum(p.numel() for p in model.parameters()))
    record.update(cost or {})
    outputs = getattr(model, "test_outputs", None) or {}
    n_test = len(outputs["target"]) if "target" in outputs else 0
    if n_test and wall_time_s.get("test"):
        # throughput of the whole test loop (data loading and metrics included), not a latency benchmark
        record["test_images_per_s"] = round(n_test / float(wall_time_s["test"]), 3)
    if n_test and class_names and datamodule is not None and "test" in getattr(datamodule, "datasets", {}):
        # the probability columns are the model's classes (a segmentation model scores [normal, defect])
        prob_names = list(getattr(model, "class_names", None) or class_names)
        probs = outputs.get("probs")
        if getattr(probs, "ndim", 0) == 2 and probs.shape[1] == len(prob_names):
            frame = predictions_frame(outputs, datamodule.datasets["test"], prob_names, normal_index)
            frame.to_csv(out / PREDICTIONS_FILE, index=False)
        else:  # bookkeeping must not fail a finished run
            log.warning("test_outputs['probs'] is not (N, %d) class probabilities; %s not written",
                        len(prob_names), PREDICTIONS_FILE)
    (out / METRICS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    return out / METRICS_FILE


def write_failure(output_dir: str | Path, error: BaseException, status: str = "failed", **extra: Any) -> Path | None:
    """Mark a run as ``failed`` (or ``interrupted``) in ``metrics.json``, keeping what an earlier write put there.

    ``extra`` adds keys, e.g. ``resume={"ckpt_path": ..., "command": ...}`` for an interrupted run.
    """
    try:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / METRICS_FILE
        record = json.loads(path.read_text()) if path.is_file() else {"metrics": {}}
        record.update(
            status=status,
            error=f"{type(error).__name__}: {error}",
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:],
            **extra,
        )
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
        return path
    except OSError as exc:  # never hide the original error behind a bookkeeping one
        log.warning("could not record the failure in %s: %s", output_dir, exc)
        return None
