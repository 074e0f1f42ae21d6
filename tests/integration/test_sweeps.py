"""Sweeps: the Optuna study lives in SQLite and resumes (failed trials recorded, the search going on); the
sweep experiment configs compose; the SLURM launcher config instantiates; submitit's local executor runs a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import FAST, REPO, compose_config, run_train_main
from hydra.utils import instantiate
from omegaconf import OmegaConf


def test_optuna_study_resumes_from_sqlite_and_survives_failed_trials(tmp_path, data_dir, monkeypatch):
    import optuna

    # the config's storage, in a log folder that does not exist yet (the sweeper opens it before any job runs)
    db = tmp_path / "logs" / "optuna_supervised_awdd.db"
    argv = ["-m", "hparams_search=supervised_optuna", "experiment=supervised_awdd", *FAST,
            f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}",
            "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'sweep1'}"]
    run_train_main(argv, monkeypatch)
    study = optuna.load_study(study_name="supervised_awdd_search", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # the same command again resumes the study; trials that fail (negative learning rate) are recorded as FAIL and
    # do not stop the search (the pre-flight check would stop it before the first trial: told to warn only)
    argv[-1] = f"hydra.sweep.dir={tmp_path / 'sweep2'}"
    run_train_main([*argv, "model.optimizer.lr=-1", "hydra.callbacks.sweep_preflight.on_error=warn"], monkeypatch)
    study = optuna.load_study(study_name="supervised_awdd_search", storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    assert len(states) == 4
    assert states[2:] == [optuna.trial.TrialState.FAIL] * 2
    failed = json.loads((tmp_path / "sweep2" / "0" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "learning rate" in failed["error"]


@pytest.mark.parametrize(
    "experiment, swept",
    [
        ("sweeps/supervised_budget", {"data.label_budget.total": "20,50,100,200", "seed": "0,1,2"}),
        ("sweeps/supervised_seeds", {"data": "synthetic_awdd,synthetic_bdd", "seed": "0,1,2"}),
        ("sweeps/cross_metal_bdd", {"arm": "oracle,target_only,source_only", "data": "synthetic_bdd"}),
        ("sweeps/cross_neu_xsdd", {"arm": "oracle,target_only,source_only", "data": "x_sdd"}),
        ("sweeps/madd_budget", {"data.label_budget.total": "20,50,100,200"}),
        ("sweeps/madd_sensitivity", {"model.loss_weights.delta": "0.05,0.1,0.15,0.3,0.5"}),
    ],
)
def test_sweep_experiments_compose(experiment, swept, tmp_path, data_dir):
    cfg = compose_config([f"experiment={experiment}"], tmp_path, data_dir)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert {k: params[k] for k in swept} == swept
    if experiment.startswith("sweeps/madd"):
        assert cfg.model._target_ == "madd.models.madd.MADDModule"
    if experiment == "sweeps/madd_sensitivity":
        assert cfg.model.weight_adaptation.enabled is False


def test_cross_domain_arms_set_split_and_budget(tmp_path, data_dir):
    arms = {}
    for arm in ("oracle", "target_only", "source_only"):
        cfg = compose_config(["experiment=sweeps/cross_metal_awdd", f"arm={arm}"], tmp_path, data_dir)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        arms[arm] = (cfg.model.train_split, data["train_splits"], data["label_budget"]["total"])
    assert arms == {"oracle": ("target_labeled", ["target_labeled"], None),
                    "target_only": ("target_labeled", ["target_labeled"], 50),
                    "source_only": ("source", ["source"], 50)}


def test_madd_optuna_searches_the_loss_weights(tmp_path, data_dir):
    cfg = compose_config(["hparams_search=madd_optuna", "experiment=madd_awdd"], tmp_path, data_dir)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == {f"model.loss_weights.{w}" for w in ("alpha", "beta", "gamma", "delta", "epsilon")}
    assert cfg.hydra.sweeper.storage.startswith("sqlite:///") and cfg.hydra.sweeper.max_failure_rate == 1.0
    assert cfg.optimized_metric == "val/mAP" and cfg.model.weight_adaptation.enabled is False


def test_slurm_launcher_config_instantiates(tmp_path, data_dir):
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    cfg = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path, data_dir)
    launcher = instantiate(cfg.hydra.launcher)
    assert isinstance(launcher, SlurmLauncher)
    assert launcher.params["partition"] == "gpu" and launcher.params["gpus_per_node"] == 1
    assert launcher.params["timeout_min"] == 240 and launcher.params["array_parallelism"] == 16


def test_submitit_local_launcher_runs_a_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=local", "experiment=supervised_awdd", *FAST,
           f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep / "0" / "metrics.json").read_text())
    assert record["status"] == "completed" and "test/mAP" in record["metrics"]
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # it really went through submitit
