"""End-to-end runs of what ``train.py`` does (``madd.pipeline.train``) on tiny synthetic data, on CPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import REPO, TINY_DATA, TINY_SOURCE, compose_config

from madd.callbacks.finite_loss import NonFiniteLossError
from madd.cli import run_task
from madd.errors import MaddConfigError
from madd.models.supervised import SupervisedClassifier
from madd.pipeline import train

# the shared tiny data at 32 px (ResNet-18 still works: its last map is 1x1) keeps each epoch at a few seconds
TINY = [o for o in TINY_DATA if not o.startswith("data.image_size=")] + [
    "data.image_size=32", *TINY_SOURCE, "logger=csv", "trainer.log_every_n_steps=1"]
TEST_KEYS = {"test/mAP", "test/accuracy", "test/f1", "test/auroc", "test/DR", "test/FAR", "test/loss"}



def _ckpts(tmp_path: Path) -> Path:
    return tmp_path / "out" / "checkpoints"


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fast_dev_run(tmp_path, data_dir):
    metrics = train(compose_config(["trainer=debug", *TINY], tmp_path, data_dir))
    assert TEST_KEYS <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["test/mAP"] <= 1.0


def test_source_pretraining_loads_the_source_split(tmp_path, data_dir, monkeypatch):
    seen = []
    original = SupervisedClassifier.training_step

    def spy(self, batch, batch_idx):
        seen.append(sorted(batch))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SupervisedClassifier, "training_step", spy)
    train(compose_config(["trainer=debug", "model.train_split=source", *TINY], tmp_path, data_dir))
    assert seen == [["source"]]


def test_two_epochs_write_best_and_last_and_test_the_best(tmp_path, data_dir, monkeypatch):
    tested = []
    original = L.Trainer.test

    def spy(self, *args, **kwargs):
        tested.append(kwargs.get("ckpt_path"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "test", spy)
    metrics = train(compose_config(["trainer.max_epochs=2", *TINY], tmp_path, data_dir))
    files = sorted(p.name for p in _ckpts(tmp_path).glob("*.ckpt"))
    assert "last.ckpt" in files and any(f.startswith("epoch_") for f in files), files
    best = next(p for p in _ckpts(tmp_path).glob("epoch_*.ckpt"))
    assert tested == [str(best)]  # the best checkpoint is what gets tested
    assert TEST_KEYS <= set(metrics) and "val/mAP" in metrics
    # one row per epoch of validation metrics in the CSV log
    csv = next((tmp_path / "out" / "csv").rglob("metrics.csv")).read_text()
    assert csv.count("val/mAP") == 1 and len([r for r in csv.splitlines()[1:] if r]) >= 2

    ckpt = _state(_ckpts(tmp_path) / "last.ckpt")  # plain tensors and containers only
    assert ckpt["epoch"] == 1 and "rng_states" in ckpt and "optimizer_states" in ckpt
    assert ckpt["madd_config"]["data"]["target"]["num_images"] == 80  # the resolved run config
    assert ckpt["hyper_parameters"]["class_names"][0] == "good"

    # `train=false ckpt_path=<best>` evaluates that checkpoint: the same test numbers again
    again = train(compose_config(["train=false", f"ckpt_path={best}", *TINY], tmp_path / "eval", data_dir))
    assert tested[-1] == str(best)
    assert {k: again[k] for k in TEST_KEYS} == pytest.approx({k: metrics[k] for k in TEST_KEYS})


def test_resume_is_exact(tmp_path, data_dir):
    """2 epochs in one go == 1 epoch + resume from last.ckpt for 1 more (deterministic CPU), into another run
    folder: the same weights and the same tested checkpoint (Lightning alone forgets the best-so-far there)."""
    common = [*TINY, "trainer.deterministic=true", "model.scheduler.T_max=2", "model.class_weights=balanced"]
    full = train(compose_config(["trainer.max_epochs=2", *common], tmp_path / "full", data_dir))
    train(compose_config(["trainer.max_epochs=1", *common], tmp_path / "first", data_dir))
    first_last = _ckpts(tmp_path / "first") / "last.ckpt"
    assert _state(first_last)["epoch"] == 0
    before = {p.name: p.stat().st_mtime_ns for p in _ckpts(tmp_path / "first").iterdir()}
    resumed = train(compose_config(["trainer.max_epochs=2", f"ckpt_path={first_last}", *common],
                                   tmp_path / "resumed", data_dir))
    # the best-so-far came along into the new run folder (ResumableModelCheckpoint); the old run is untouched
    assert {p.name: p.stat().st_mtime_ns for p in _ckpts(tmp_path / "first").iterdir()} == before
    a = _state(_ckpts(tmp_path / "full") / "last.ckpt")
    b = _state(_ckpts(tmp_path / "resumed") / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert full["val/mAP"] == resumed["val/mAP"] and full["test/mAP"] == resumed["test/mAP"]


def test_balanced_class_weights_follow_the_labelled_split(tmp_path, data_dir):
    cfg = compose_config(["trainer=debug", "model.class_weights=balanced", *TINY], tmp_path, data_dir)
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="partial")
    L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False).fit(model, dm)
    labels = torch.tensor([r.label for r in dm.records["target_labeled"]])
    counts = torch.bincount(labels, minlength=5).float()
    # sklearn "balanced": n / (k * count_c), here n = 10 labels over k = 5 classes
    assert torch.allclose(model.ce_weights.weight, 10 / (5 * counts))


def test_class_weights_validation():
    from madd.models.backbones import Backbone

    with pytest.raises(MaddConfigError, match="model.class_weights needs 3"):
        SupervisedClassifier(Backbone("resnet18"), num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(MaddConfigError, match="model.class_weights='inverse'"):
        SupervisedClassifier(Backbone("resnet18"), num_classes=3, class_weights="inverse")
    m = SupervisedClassifier(Backbone("resnet18"), num_classes=2, class_weights=[1.0, 3.0])
    assert m.ce_weights.weight.tolist() == [1.0, 3.0]


def test_imagenet_weights_absent_is_a_clear_error(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = compose_config(["trainer=debug", "model/backbone=resnet18", "model.backbone.weights=IMAGENET1K_V1", *TINY],
                         tmp_path, data_dir)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(MaddConfigError, match="model.backbone.weights=IMAGENET1K_V1") as err:
        train(cfg)
    assert str(expected) in str(err.value) and "weights=null" in str(err.value)
    # through the command-line wrapper: exit status 2 and one message, no traceback
    with pytest.raises(SystemExit) as exit_:
        run_task(train, cfg)
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("madd error:") == 1 and str(expected) in stderr and "Traceback" not in stderr


def test_bad_data_stops_before_training_with_exit_2(tmp_path, data_dir, capsys):
    cfg = compose_config(["trainer.max_epochs=1", "data.label_budget.total=1000", *TINY_DATA[:3], *TINY_SOURCE],
                         tmp_path, data_dir)
    with pytest.raises(SystemExit) as exit_:
        run_task(train, cfg)
    assert exit_.value.code == 2
    assert "data.label_budget.total=1000" in capsys.readouterr().err
    assert not _ckpts(tmp_path).exists()


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, data_dir, monkeypatch):
    original = SupervisedClassifier.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        if self.current_epoch == 1:  # epoch 0 trains normally and writes last.ckpt
            self.log("train/loss_rec", torch.tensor(float("nan")))
            return loss * float("nan")
        return loss

    monkeypatch.setattr(SupervisedClassifier, "training_step", poisoned)
    cfg = compose_config(["trainer.max_epochs=3", *TINY], tmp_path, data_dir)
    with pytest.raises(NonFiniteLossError, match=r"train/loss_rec") as err:
        train(cfg)
    assert "epoch 1" in str(err.value) and "loss (returned by training_step)" in str(err.value)
    last = _state(_ckpts(tmp_path) / "last.ckpt")
    assert last["epoch"] == 0  # the last good state, not the poisoned one
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


@pytest.mark.ddp
def test_ddp_sim_two_cpu_processes(tmp_path, data_dir):
    """``trainer=ddp_sim``: two spawned CPU processes (gloo) through the whole fit + test path."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    args = ["trainer=ddp_sim", "trainer.max_epochs=1", *TINY, "callbacks.rich_progress_bar=null",
            "+trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}"]
    out = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/mAP" in out.stdout and "Test metrics" in out.stdout
    run = next((tmp_path / "logs" / "train" / "runs").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    log = out.stderr + out.stdout
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log


def test_multirun_gives_each_job_its_own_folder(tmp_path, data_dir):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    args = ["-m", "seed=0,1", "trainer=debug", *TINY, "callbacks.rich_progress_bar=null",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}"]
    out = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = next((tmp_path / "logs" / "train" / "multiruns").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job, seed in zip(jobs, ("0", "1")):
        assert f"seed={seed}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert (sweep / job / "train.log").is_file()


def test_optuna_sweep_two_trials(tmp_path, data_dir):
    """``hparams_search=supervised_optuna``: two tiny trials, the study in SQLite under paths.log_dir."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    args = ["-m", "hparams_search=supervised_optuna", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1", "trainer=debug", *TINY, "callbacks.rich_progress_bar=null",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}"]
    out = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Best value:" in out.stdout + out.stderr
    assert (tmp_path / "logs" / "optuna_train.db").is_file()
    sweep = next((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert (sweep / "optimization_results.yaml").is_file()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0", "1"]
