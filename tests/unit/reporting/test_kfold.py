"""The mineral-wool k-fold study: binary class merging, one fold job of the CPU preset, the fold summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import compose_config
from hydra.utils import instantiate

from madd.reporting.kfold import main as summary_main
from madd.reporting.kfold import summarize
from madd.data.records import DatasetIndex, Record
from madd.data.sources import merge_classes
from madd.errors import DataError, MaddConfigError
from madd.pipeline import train




def test_merge_classes_relabels_and_refuses_to_drop():
    index = DatasetIndex([Record("a", 0), Record("b", 1), Record("c", 2, boxes=[(2, 0, 0, 1, 1)])],
                         ["good", "crack", "pore"])
    merged = merge_classes(index, ["good", "defect"], {"defect": ["crack", "pore"]})
    assert [r.label for r in merged.records] == [0, 1, 1] and merged.class_names == ["good", "defect"]
    assert merged.records[2].boxes == [(1, 0, 0, 1, 1)]
    with pytest.raises(DataError, match=r"\['pore'\] outside"):
        merge_classes(index, ["good", "defect"], {"defect": ["crack"]})
    with pytest.raises(DataError, match="not classes of the dataset"):
        merge_classes(index, ["good", "defect"], {"defect": ["crack", "pore", "scratch"]})


WOOL = ["experiment=wool_resnet_kfold_cpu", "data.target.num_images=60", "data.target.image_size=32",
        "data.image_size=32", "trainer.max_epochs=3", "callbacks.l1_pruning.rounds=2",
        "callbacks.l1_pruning.latency_batch_sizes=[1,4]", "callbacks.l1_pruning.latency_min_run_time=0.01"]


def test_binary_synthetic_data_and_one_fold_of_the_cpu_study(tmp_path, data_dir):
    cfg = compose_config([*WOOL, "data.fold=1"], tmp_path, data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    assert dm.class_names == ["good", "defect"]
    counts = dm.summary()
    test_counts = np.array(list(counts["test"].values()))
    assert test_counts.sum() == 20 and abs(test_counts[0] - test_counts[1]) <= 1  # balanced held-out fold
    assert sum(counts["target_unlabeled"].values()) == 0  # fully supervised

    train(cfg)
    report = pd.read_csv(tmp_path / "out" / "pruning" / "report.csv")
    assert report["stage"].tolist() == ["baseline", "round 1", "round 2"]
    assert report["flops_ratio"].iloc[-1] < 0.5  # scope=all: residual streams pruned too
    assert (report["latency_b1_ms"] > 0).all() and (report["throughput_b4"] > 0).all()


def _fake_job(root, num, overrides, accuracies, status="completed"):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps({"status": status, "metrics": {"test/accuracy": accuracies[-1]}}))
    if status == "completed":
        (job / "pruning").mkdir()
        rows = [{"stage": s, "accuracy": a, "accuracy_change": (a - accuracies[0]) * 100, "params": 100 - 10 * i}
                for i, (s, a) in enumerate(zip(["baseline", "round 1"], accuracies))]
        pd.DataFrame(rows).to_csv(job / "pruning" / "report.csv", index=False)


def test_kfold_summary_mean_and_std_over_folds(tmp_path, capsys):
    _fake_job(tmp_path, 0, ["model/optimizer=adam", "data.fold=0"], [0.90, 0.88])
    _fake_job(tmp_path, 1, ["model/optimizer=adam", "data.fold=1"], [0.80, 0.81])
    _fake_job(tmp_path, 2, ["model/optimizer=sgd", "data.fold=0"], [0.70, 0.70])
    _fake_job(tmp_path, 3, ["model/optimizer=sgd", "data.fold=1"], [0.0], status="failed")
    summary, problems = summarize([tmp_path])
    adam = summary[summary["setting"] == "model/optimizer=adam"].set_index("stage")
    assert adam.loc["baseline", "n"] == 2
    assert adam.loc["baseline", "accuracy_mean"] == pytest.approx(85.0)
    assert adam.loc["baseline", "accuracy_std"] == pytest.approx(math.sqrt(50.0))  # sample std of 90, 80
    assert adam.loc["round 1", "accuracy_change_mean"] == pytest.approx((-2.0 + 1.0) / 2)
    assert adam.loc["test", "accuracy_mean"] == pytest.approx(84.5)
    assert len(problems) == 1 and "failed" in problems[0]
    summary_main([f"dir={tmp_path}", f"out={tmp_path / 'summary'}"])
    text = (tmp_path / "summary" / "kfold_summary.md").read_text()
    assert "| model/optimizer=adam | baseline | 2 | 85.00 ± 7.07 |" in text
    assert "kfold_summary.csv" in [p.name for p in (tmp_path / "summary").iterdir()]
    with pytest.raises(MaddConfigError, match="no Hydra job"):
        summarize([tmp_path / "summary"])
    with pytest.raises(SystemExit):
        summary_main(["folder=x"])
