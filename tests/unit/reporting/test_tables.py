"""report.py on fake multirun folders with known numbers: mean ± std, paired t-tests, Δ, layouts, failed jobs,
small/rare defect rates, the CSV-logger fallback, plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers.reporting_fakes import make_job, predictions
from scipy import stats

from madd.errors import MaddConfigError
from madd.reporting import defects
from madd.reporting.collect import collect, parse_overrides
from madd.reporting.report import make_report
from madd.reporting.tables import display_order, format_cell, is_percent

A = [0.90, 0.92, 0.94]  # row model=madd, seeds 0..2
B = [0.80, 0.85, 0.83]  # row model=supervised


def build_two_methods(root, datasets=("synthetic_awdd",)):
    num = 0
    for d, dataset in enumerate(datasets):
        for method, values in (("madd", A), ("supervised", B)):
            for seed, v in enumerate(values):
                make_job(root, num, [f"model={method}", f"data={dataset}", f"seed={seed}"],
                         {"test/mAP": v - 0.1 * d, "test/FAR": 0.1}, choices={"model": method, "data": dataset})
                num += 1
    return root


def test_mean_std_and_paired_t_test_match_hand_values(tmp_path):
    result = make_report({"dir": str(build_two_methods(tmp_path)), "metrics": ["test/mAP"], "reference": "madd"})
    s = result["summary"].set_index("row")
    assert s.loc["madd", "mean"] == pytest.approx(0.92)
    assert s.loc["madd", "std"] == pytest.approx(0.02)  # sample std (ddof=1)
    assert s.loc["supervised", "mean"] == pytest.approx(np.mean(B))
    assert s.loc["supervised", "std"] == pytest.approx(np.std(B, ddof=1))
    # paired t by hand: d = B - A per seed, t = mean(d) / (sd(d) / sqrt(n)), two-sided with n - 1 dof
    d = np.subtract(B, A)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * stats.t.sf(abs(t), df=len(d) - 1)
    assert s.loc["supervised", "t"] == pytest.approx(t)
    assert s.loc["supervised", "p_value"] == pytest.approx(p)
    assert s.loc["supervised", "p_value"] == pytest.approx(stats.ttest_rel(B, A).pvalue)
    assert math.isnan(s.loc["madd", "p_value"])
    md = result["markdown"]
    assert "| madd | 92.0 ± 2.0 (ref) |" in md
    assert f"| supervised | 82.7 ± 2.5 (p={p:.3f}) |" in md
    written = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert set(written["row"]) == {"madd", "supervised"}
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}


def test_best_reference_and_datasets_as_columns(tmp_path):
    result = make_report({"dir": str(build_two_methods(tmp_path, ("synthetic_awdd", "synthetic_bdd"))),
                          "metrics": ["test/mAP", "test/FAR"], "rows": ["model"], "reference": "best"})
    md = result["markdown"]
    assert "| model | metric | synthetic_awdd | synthetic_bdd |" in md
    assert "| madd | mAP (%) | 92.0 ± 2.0 (ref) | 82.0 ± 2.0 (ref) |" in md
    assert "|  | FAR (%) | 10.0 ± 0.0 (ref) | 10.0 ± 0.0 (ref) |" in md
    # identical values in both rows: no test is possible
    far = result["summary"].query("metric == 'test/FAR' and row == 'supervised'")
    assert far["p_value"].isna().all()


def test_delta_is_reference_minus_row_paired_by_seed(tmp_path):
    for seed, (oracle, cross) in enumerate([(0.95, 0.90), (0.96, 0.93), (0.97, 0.91)]):
        make_job(tmp_path, 2 * seed, ["+arm=oracle", f"seed={seed}"], {"test/mAP": oracle}, adaptation_s=5.0)
        make_job(tmp_path, 2 * seed + 1, ["+arm=cross", f"seed={seed}"], {"test/mAP": cross}, adaptation_s=20.0)
    result = make_report({"dir": str(tmp_path), "metrics": ["test/mAP", "DAT_s"], "reference": "oracle",
                          "delta": {"metric": "test/mAP", "reference": "oracle"}})
    s = result["summary"].set_index(["row", "metric"])
    assert s.loc[("cross", "Δtest/mAP"), "mean"] == pytest.approx(np.mean([0.05, 0.03, 0.06]))
    assert s.loc[("oracle", "Δtest/mAP"), "mean"] == pytest.approx(0.0)
    assert s.loc[("cross", "DAT_s"), "mean"] == pytest.approx(20.0)
    assert "ΔmAP (%)" in result["markdown"] and "| cross | 91.3" in result["markdown"]


def test_failed_jobs_are_listed_not_averaged(tmp_path):
    make_job(tmp_path, 0, ["model.loss_weights.delta=0.05", "seed=0"], {"test/mAP": 0.5})
    make_job(tmp_path, 1, ["model.loss_weights.delta=0.05", "seed=1"], {"test/mAP": 0.7})
    make_job(tmp_path, 2, ["model.loss_weights.delta=0.5", "seed=0"], {"test/mAP": 0.6})
    make_job(tmp_path, 3, ["model.loss_weights.delta=0.5", "seed=1"], {}, status="failed")
    result = make_report({"dir": str(tmp_path), "metrics": ["test/mAP"], "reference": None})
    s = result["summary"].set_index("row")
    assert s.loc["0.05", "mean"] == pytest.approx(0.6) and s.loc["0.5", "n"] == 1
    assert "## Jobs that did not complete" in result["markdown"] and "RuntimeError: boom" in result["markdown"]
    assert "[n=1]" in result["markdown"]
    figure = tmp_path / "report" / "test_mAP_vs_model.loss_weights.delta.png"
    assert figure in result["figures"] and figure.stat().st_size > 1000


def test_small_and_rare_defect_rates(tmp_path):
    # targets: good, crack (small), crack (large), pore (small), pore (large); pore has 2 labels -> rare
    frame = predictions([0, 1, 1, 2, 2], [0, 0, 1, 2, 0], [0.0, 0.004, 0.05, 0.002, 0.03])
    assert defects.small_defect_rate(frame, 0, 0.01) == pytest.approx(0.5)  # crack small missed, pore small hit
    assert defects.rare_classes({"good": 10, "crack": 6, "pore": 2}, "good") == ["pore"]
    assert defects.rare_defect_rate(frame, ["good", "crack", "pore"], 0, ["pore"]) == pytest.approx(0.5)
    assert defects.per_class_detection_rate(frame, ["good", "crack", "pore"], 0) == {"crack": 0.5, "pore": 0.5}
    assert math.isnan(defects.small_defect_rate(frame, 0, 0.001))
    # without a normal class a hit is the right class
    assert defects.detection_rate(frame, None) == pytest.approx(3 / 5)
    make_job(tmp_path, 0, ["seed=0"], {"test/mAP": 0.5}, predictions=frame)
    row = collect(tmp_path, small_fraction=0.01).iloc[0]
    assert row["test/DR_small"] == pytest.approx(0.5) and row["test/DR_rare"] == pytest.approx(0.5)
    assert row["DAT_s"] == pytest.approx(10.0)
    result = make_report({"dir": str(tmp_path), "metrics": ["test/mAP", "test/DR_small"]})
    assert (tmp_path / "report" / "pr_curves.png") in result["figures"]


def test_csv_logger_fallback(tmp_path):
    job = make_job(tmp_path, 0, ["seed=0"], write_record=False)
    (job / "csv" / "version_0").mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1, 1], "val/mAP": [0.4, 0.6, None], "val/loss": [1.0, 0.5, None],
                  "test/mAP": [None, None, 0.55]}).to_csv(job / "csv" / "version_0" / "metrics.csv", index=False)
    row = collect(tmp_path).iloc[0]
    assert row["status"] == "completed" and row["test/mAP"] == pytest.approx(0.55)
    assert row["val/mAP_best"] == pytest.approx(0.6) and row["val/loss_best"] == pytest.approx(0.5)


def test_helpers_and_errors(tmp_path):
    assert parse_overrides(["a.b=0.05", "+c=[1,2]", "~d", "e=x"]) == {"a.b": 0.05, "c": [1, 2], "e": "x"}
    assert is_percent("test/mAP") and is_percent("val/DR_best") and not is_percent("test/loss")
    assert not is_percent("DAT_s") and is_percent("Δtest/mAP")
    line = {"row": "r", "metric": "DAT_s", "mean": 123.456, "std": 1.0, "n": 3, "p_value": 0.0004, "reference": "x"}
    assert format_cell(line) == "123.5 ± 1.0 (p<0.001)"
    with pytest.raises(MaddConfigError, match="no such folder"):
        make_report({"dir": str(tmp_path / "missing"), "metrics": ["test/mAP"]})
    with pytest.raises(MaddConfigError, match="no job folders"):
        make_report({"dir": str(tmp_path), "metrics": ["test/mAP"]})
    make_job(tmp_path, 0, ["seed=0"], {"test/mAP": 0.5})
    with pytest.raises(MaddConfigError, match="reference='nope' is not a row"):
        make_report({"dir": str(tmp_path), "metrics": ["test/mAP"], "reference": "nope"})
    with pytest.raises(MaddConfigError, match="none of metrics"):
        make_report({"dir": str(tmp_path), "metrics": ["test/nothing"]})


def test_numeric_rows_and_columns_read_in_ascending_order():
    assert display_order(["20", "100", "200", "50", "100"]) == ["20", "50", "100", "200"]
    assert display_order(["0.5", "0.05", "0.2"]) == ["0.05", "0.2", "0.5"]
    assert display_order(["supervised", "madd", "supervised"]) == ["supervised", "madd"]  # as they came
    assert display_order(["20", "null"]) == ["20", "null"]
