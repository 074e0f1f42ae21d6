"""Hydra configuration: every experiment composes and instantiates; the command line fails early and clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import CONF, REPO, compose_config
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from madd.data.datamodule import DefectDataModule
from madd.errors import MaddConfigError
from madd.models.base import DefectModule
from madd.utils.config import check_required
from madd.utils.instantiate import instantiate_callbacks, instantiate_clear

EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))
GROUPS = ["callbacks", "data", "debug", "experiment", "hparams_search", "logger", "model", "model/backbone",
          "model/optimizer", "model/scheduler", "paths", "trainer"]


def _train_py(*args: str, tmp_path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"paths.log_dir={tmp_path / 'logs'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_required_groups_exist():
    for group in [*GROUPS, "hydra"]:
        assert (CONF / group).is_dir(), group
    assert {"cpu", "gpu", "ddp", "ddp_sim", "debug"} <= {p.stem for p in (CONF / "trainer").glob("*.yaml")}
    assert {"csv", "tensorboard", "wandb", "many_loggers"} <= {p.stem for p in (CONF / "logger").glob("*.yaml")}
    for exp in EXPERIMENTS:
        assert (CONF / "experiment" / f"{exp}.yaml").read_text().startswith("# @package _global_"), exp


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached: weights requests fail clearly
    cfg = compose_config([f"experiment={experiment}"], tmp_path, data_dir)
    assert cfg.task_name and cfg.data and cfg.model
    dm = instantiate(cfg.data, _convert_="all")  # constructs only: nothing is read or generated
    assert isinstance(dm, DefectDataModule) and dm.num_classes == len(cfg.data.class_names)
    instantiate_callbacks(cfg.callbacks)
    try:
        check_required(cfg)
    except MaddConfigError as err:
        # an experiment may need a user input (e.g. a teacher checkpoint); it must be named, not crash later
        assert str(err).startswith("model.") and "is required but not set" in str(err), err
        return
    try:
        model = instantiate_clear(cfg.model, _convert_="partial")
    except MaddConfigError as err:
        # offline: pretrained weights that are not in the local cache stop the run with where to put them
        assert "cache" in str(err) or "weights" in str(err), err
        return
    assert isinstance(model, DefectModule) or hasattr(model, "training_step")


@pytest.mark.parametrize("experiment,model,target", [
    ("madd_awdd", "fixmatch", "FixMatch"), ("madd_awdd", "supervised", "SupervisedClassifier"),
    ("madd_awdd", "mean_teacher", "MeanTeacher"), ("madd_awdd", "linear_probe", "LinearProbe"),
    ("madd_kolektorsdd", "fixmatch", "FixMatch"), ("madd_neu_to_xsdd", "supervised", "SupervisedClassifier"),
    ("fixmatch_awdd", "madd", "MADDModule"), ("supervised_awdd", "madd", "MADDModule"),
])
def test_an_experiment_keeps_its_data_and_budget_under_another_method(experiment, model, target, tmp_path, data_dir):
    """`experiment=madd_awdd model=fixmatch`: the fair comparison (same data, labels and training budget, another
    method). An experiment holds no method's own keys, so the swapped-in model builds (it used to die with
    ``FixMatch.__init__() got an unexpected keyword argument 'views'``)."""
    base = compose_config([f"experiment={experiment}"], tmp_path, data_dir)
    cfg = compose_config([f"experiment={experiment}", f"model={model}"], tmp_path, data_dir)
    assert cfg.data == base.data and cfg.trainer == base.trainer and cfg.seed == base.seed
    check_required(cfg)
    built = instantiate_clear(cfg.model, _convert_="partial")
    assert type(built).__name__ == target


def test_default_config_has_no_missing_values(tmp_path, data_dir):
    cfg = compose_config([], tmp_path, data_dir)
    check_required(cfg)
    assert cfg.data.target.reader == "synthetic" and cfg.trainer.accelerator == "cpu"
    ckpts = [c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, ModelCheckpoint)]
    assert any(c.monitor == "val/mAP" and c.mode == "max" for c in ckpts)  # the best checkpoint
    assert any(c.save_last or c.filename == "last" for c in ckpts)  # and last.ckpt for resuming


@pytest.mark.parametrize("override", ["trainer=gpu", "trainer=ddp", "trainer=ddp_sim", "logger=many_loggers",
                                      "model/backbone=mobilenet_v2", "model/optimizer=sgd", "model/scheduler=step",
                                      "model/scheduler=none", "data=synthetic_bdd", "debug=default"])
def test_group_options_compose(override, tmp_path, data_dir):
    cfg = compose_config([override], tmp_path, data_dir)
    check_required(cfg)


def test_help_lists_the_groups(tmp_path):
    out = _train_py("--help", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    groups = out.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for group in GROUPS:
        assert f"\n{group}: " in groups, group
    assert "ddp_sim" in groups and "supervised_awdd" in groups


def test_wrong_key_fails_before_any_work(tmp_path):
    out = _train_py("model.nonexistent=1", tmp_path=tmp_path)
    assert out.returncode != 0
    assert "Key 'nonexistent' is not in struct" in out.stderr and "full_key: model.nonexistent" in out.stderr
    assert not (tmp_path / "logs").exists()  # not even a run folder


def test_missing_required_value_fails_before_any_work(tmp_path):
    out = _train_py("data.target=???", f"paths.data_dir={tmp_path / 'data'}", tmp_path=tmp_path)
    assert out.returncode == 2
    assert "data.target is required but not set" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()  # no data generated
    assert not list((tmp_path / "logs").rglob("*.ckpt")) and not list((tmp_path / "logs").rglob("metrics.csv"))


def test_madd_defaults_are_the_measured_recipe_and_the_paper_path_is_one_override(tmp_path, data_dir):
    """docs/results.md measured these two against each other: the defaults, and the paper's pseudo-label path."""
    model = compose_config(["experiment=madd_awdd"], tmp_path, data_dir).model
    assert (model.teacher_sync.mode, model.joint.pseudo_label_view, model.joint.attention_weighting) == \
        ("ema", "strong", "normalised")
    paper = compose_config(["experiment=ablation/paper_pseudo_labels"], tmp_path, data_dir).model
    assert (paper.teacher_sync.mode, paper.teacher_sync.every_n_epochs, paper.joint.pseudo_label_view,
            paper.joint.attention_weighting) == ("copy", 5, "mild", "raw")
