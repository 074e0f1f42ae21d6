"""metrics.json / test_predictions.csv: defect areas from masks and boxes, the record's contents, failures."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from madd.deploy.cost import deploy_cost
from madd.reporting.run_record import defect_area_fraction, write_failure, write_run_record


def sample(label, mask=None, boxes=(), has_mask=False, size=10):
    m = torch.zeros(1, size, size) if mask is None else mask
    return {"label": torch.tensor(label), "mask": m, "has_mask": torch.tensor(has_mask),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)}


def test_defect_area_from_mask_boxes_or_unknown():
    mask = torch.zeros(1, 10, 10)
    mask[0, :2, :3] = 1
    assert defect_area_fraction(sample(1, mask, has_mask=True), 0) == pytest.approx(0.06)
    # boxes (class, x1, y1, x2, y2) in pixels: 5x2 and 2x2 overlapping by 1x2 -> union 12 of 100 pixels
    boxes = [(1, 0, 0, 5, 2), (1, 4, 0, 6, 2)]
    assert defect_area_fraction(sample(1, boxes=boxes), 0) == pytest.approx(0.12)
    assert defect_area_fraction(sample(0, boxes=boxes), 0) == 0.0  # a normal image has no defect
    assert math.isnan(defect_area_fraction(sample(1), 0))  # image label only


def test_run_record_and_failure(tmp_path):
    test_set = [sample(0, has_mask=True), sample(1, boxes=[(1, 0, 0, 10, 5)]), sample(2, boxes=[(2, 0, 0, 1, 1)])]
    datamodule = SimpleNamespace(class_names=["good", "crack", "pore"], normal_index=0, records={"test": [1]},
                                 datasets={"test": test_set}, summary=lambda: {"target_labeled": {"good": 3}})
    model = torch.nn.Linear(2, 3)
    model.test_outputs = {"probs": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]]),
                          "target": torch.tensor([0, 1, 2]), "index": torch.tensor([0, 1, 2])}
    path = write_run_record(tmp_path, {"test/mAP": 0.5, "val/mAP": float("nan")},
                            {"stages": 1.0, "fit": 2.0, "adaptation": 3.0, "test": 0.5}, datamodule, model,
                            best_scores={"val/mAP": 0.6})
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["metrics"]["val/mAP"] is None
    assert record["metrics"]["val/mAP_best"] == 0.6 and record["params"] == 9
    assert record["normal_class"] == "good" and record["test_images_per_s"] == pytest.approx(6.0)
    frame = pd.read_csv(tmp_path / "test_predictions.csv")
    assert frame["pred"].tolist() == [0, 1, 0]
    assert frame["defect_area"].tolist() == pytest.approx([0.0, 0.5, 0.01])
    assert frame["prob_crack"].tolist() == pytest.approx([0.2, 0.8, 0.1])
    try:
        raise ValueError("bad value")
    except ValueError as err:
        write_failure(tmp_path, err)
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and record["error"] == "ValueError: bad value"
    assert "Traceback" in record["traceback"] and record["metrics"]["test/mAP"] == 0.5


def test_deploy_cost_counts_only_the_parameters_inference_runs():
    """A module with an unused branch (like MADD's second student): deploy_params leaves it out; FLOPs of one
    Linear(4, 3) forward are 2 * 4 * 3 (a multiply-add is 2 FLOPs)."""

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = torch.nn.Linear(4, 3), torch.nn.Linear(4, 100)

        def forward(self, x):
            return self.used(x.flatten(1))

    cost = deploy_cost(TwoHeads(), (1, 2, 2), min_run_time=0.01)
    assert cost["deploy_params"] == 4 * 3 + 3
    assert cost["flops"] == 2 * 4 * 3
    assert cost["latency_ms"] > 0 and cost["fps"] == pytest.approx(1000 / cost["latency_ms"], rel=1e-2)
