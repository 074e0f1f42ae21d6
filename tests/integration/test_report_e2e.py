"""A real multirun of ``train.py`` (subprocess, tiny data) in which one job per seed fails: the other jobs still
run, every job leaves ``metrics.json``, and ``report.py`` turns the folder into tables, CSV and figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from helpers import REPO, TINY_DATA, TINY_SOURCE


# slow: four train.py jobs and report.py in subprocesses. Faster tests cover the same path:
# test_train.py::test_multirun_gives_each_job_its_own_folder (the multirun), test_entry_points.py::test_report_of_the_run
# (report.py on a real run), unit/reporting/test_tables.py::test_failed_jobs_are_listed_not_averaged (failed jobs).
@pytest.mark.slow
def test_multirun_with_a_failed_job_then_report(tmp_path, data_dir):
    sweep = tmp_path / "multirun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    train = [
        sys.executable, "train.py", "-m", "experiment=supervised_awdd", *TINY_DATA, *TINY_SOURCE,
        "++trainer.fast_dev_run=true", "callbacks.rich_progress_bar=null", "logger=csv",
        f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}",
        "seed=0,1", "model.optimizer.lr=-1,0.001",  # lr=-1 fails in configure_optimizers
        "hydra.callbacks.sweep_preflight.on_error=warn",  # the pre-flight would refuse the sweep up front
    ]
    proc = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    # all four jobs ran (the failures did not stop the sweep); Hydra reports the first failure at the end
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "model.optimizer.lr=-1" in proc.stderr  # each failed job stops on the typed config check
    status = {j: json.loads((sweep / str(j) / "metrics.json").read_text())["status"] for j in range(4)}
    assert status == {0: "failed", 1: "completed", 2: "failed", 3: "completed"}
    assert (sweep / "3" / "test_predictions.csv").is_file()
    # Table 5's cost of the deployed network: a supervised classifier runs every parameter it has
    record = json.loads((sweep / "3" / "metrics.json").read_text())
    assert record["deploy_params"] == record["params"] and record["flops"] > 0 and record["fps"] > 0

    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "report.py", f"dir={sweep}", f"out={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert "Rows: model.optimizer.lr" in md and "2 completed of 4 jobs" in md
    assert "## Jobs that did not complete" in md and md.count("model.optimizer.lr=-1: input should be greater than 0") == 2
    summary = pd.read_csv(out / "summary.csv", dtype={"row": str})
    good = summary[(summary["row"] == "0.001") & (summary["metric"] == "test/mAP")].iloc[0]
    runs = pd.read_csv(out / "runs.csv")
    maps = runs.loc[runs["status"] == "completed", "test/mAP"]
    assert good["n"] == 2 and abs(good["mean"] - maps.mean()) < 1e-9 and abs(good["std"] - maps.std()) < 1e-9
    assert (out / "pr_curves.png").stat().st_size > 1000
