"""Issue 16: every failure a user can cause ends with one message (exit status 2, no traceback), a stopped run
says so (exit status 143/130, ``status: interrupted``, a resumable ``last.ckpt``), and a multirun neither keeps
every job's memory nor discovers job by job what a pre-flight check can say up front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FAST, REPO, TINY_DATA, TINY_SOURCE, compose_config, run_train_main
from hydra.experimental.callback import Callback

import madd.pipeline
from madd.cli import run_task
from madd.errors import MaddConfigError
from madd.models.supervised import SupervisedClassifier
from madd.pipeline import train

TINY = [o for o in TINY_DATA if not o.startswith("data.image_size=")] + [
    "data.image_size=32", *TINY_SOURCE, "logger=csv", "trainer.log_every_n_steps=1"]
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def exits_with_one_message(cfg, capsys, *expected: str, task=train) -> str:
    """``run_task(task, cfg)`` ends with exit status 2 and one message on stderr holding ``expected``."""
    with pytest.raises(SystemExit) as exit_:
        run_task(task, cfg)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("madd error:") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if the pipeline gets as far as building data or a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(madd.pipeline, "instantiate_clear", refuse)


# ---------------------------------------------------------------------- types and ranges
@pytest.mark.parametrize("override, key", [
    ("data.image_size=abc", "data.image_size='abc'"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.batch_size=-4", "data.batch_size=-4"),
    ("data.eval_batch_size=2.5", "data.eval_batch_size=2.5"),
    ("data.label_budget.total=0", "data.label_budget.total=0"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("trainer.max_epochs=many", "trainer.max_epochs='many'"),
    ("data.fold=5", "data.fold=5 must be < data.num_folds=1"),
    ("data.modality=xray", "data.modality='xray'"),
])
def test_bad_types_and_ranges_stop_before_any_work(override, key, tmp_path, data_dir, capsys, nothing_built):
    cfg = compose_config(["trainer=debug", *TINY, override], tmp_path, data_dir)
    with pytest.raises(MaddConfigError, match="invalid config value"):
        train(cfg)
    exits_with_one_message(cfg, capsys, key)


def test_several_bad_values_are_listed_together(tmp_path, data_dir, nothing_built):
    cfg = compose_config(["trainer=debug", *TINY, "data.batch_size=0", "model.optimizer.lr=-1"], tmp_path, data_dir)
    with pytest.raises(MaddConfigError, match="2 invalid config values") as err:
        train(cfg)
    assert "data.batch_size=0" in str(err.value) and "model.optimizer.lr=-1" in str(err.value)
    assert "learning rate" in str(err.value)  # the field's description: what to set


def test_required_value_left_unset_is_exit_2(tmp_path, data_dir, capsys, nothing_built):
    cfg = compose_config(["trainer=debug", *TINY, "data.target=???"], tmp_path, data_dir)
    exits_with_one_message(cfg, capsys, "data.target is required but not set")


# ---------------------------------------------------------------------- ckpt_path
def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _ckpt_missing(tmp_path, cfg):
    return tmp_path / "nope" / "last.ckpt", "ckpt_path="


def _ckpt_truncated(tmp_path, cfg):
    path = _save({"state_dict": {"w": torch.zeros(1000)}, "madd_config": {}}, tmp_path / "cut.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, "cannot be loaded safely"


class Payload:  # unpickling this would import and call code: weights_only refuses it
    def __reduce__(self):
        return (print, ("pwned",))


def _ckpt_unsafe(tmp_path, cfg):
    return _save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt"), "cannot be loaded safely"


def _ckpt_other_model(tmp_path, cfg):
    other = {"model": {"_target_": "madd.models.madd.lightning_model.MADD"}}
    return (_save({"state_dict": {}, "madd_config": other, "optimizer_states": [], "loops": {}}, tmp_path / "o.ckpt"),
            "holds a madd.models.madd.lightning_model.MADD but this run builds a "
            "madd.models.supervised.SupervisedClassifier")


def _ckpt_weights_only(tmp_path, cfg):
    own = {"model": {"_target_": cfg.model._target_}}
    return _save({"state_dict": {}, "madd_config": own}, tmp_path / "w.ckpt"), "holds weights only"


@pytest.mark.parametrize("make", [_ckpt_missing, _ckpt_truncated, _ckpt_unsafe, _ckpt_other_model,
                                  _ckpt_weights_only])
def test_bad_resume_checkpoint_stops_before_any_work(make, tmp_path, data_dir, capsys, nothing_built):
    cfg = compose_config(["trainer=debug", *TINY], tmp_path, data_dir)
    path, message = make(tmp_path, cfg)
    cfg.ckpt_path = str(path)
    with pytest.raises(MaddConfigError, match="ckpt_path="):
        train(cfg)
    exits_with_one_message(cfg, capsys, message, str(path))
    assert "pwned" not in capsys.readouterr().out


def test_checkpoint_of_another_shape_is_refused_before_fit(tmp_path, data_dir, capsys, monkeypatch):
    cfg = compose_config(["trainer=debug", *TINY], tmp_path, data_dir)
    own = {"model": {"_target_": cfg.model._target_}}
    state = {"net.head.weight": torch.zeros(3, 7)}  # another class count / width than this config builds
    cfg.ckpt_path = str(_save({"state_dict": state, "madd_config": own, "optimizer_states": [], "loops": {}},
                              tmp_path / "shape.ckpt"))
    monkeypatch.setattr("lightning.Trainer.fit", lambda *a, **k: pytest.fail("fit started"))
    exits_with_one_message(cfg, capsys, "does not fit the model this config builds", "net.head.weight")


# ---------------------------------------------------------------------- non-finite loss
def test_non_finite_loss_is_exit_2_with_checkpoints_intact(tmp_path, data_dir, monkeypatch, capsys):
    original = SupervisedClassifier.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 1 else loss

    monkeypatch.setattr(SupervisedClassifier, "training_step", poisoned)
    cfg = compose_config(["trainer.max_epochs=3", *TINY], tmp_path, data_dir)
    exits_with_one_message(cfg, capsys, "non-finite training loss at epoch 1", "lower the learning rate")
    last = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0  # the last good state; the interrupt checkpoint did not overwrite it
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]


# ---------------------------------------------------------------------- folders that cannot be written
def test_unwritable_output_dir_is_exit_2(tmp_path, data_dir, capsys, nothing_built):
    (tmp_path / "a_file").write_text("not a folder")
    cfg = compose_config(["trainer=debug", *TINY], tmp_path, data_dir)
    cfg.paths.output_dir = str(tmp_path / "a_file" / "out")
    exits_with_one_message(cfg, capsys, "paths.output_dir=", "cannot write there")


def _run(script: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_predict_and_hydra_folders_that_cannot_be_written_are_exit_2(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "model.ckpt").write_bytes(b"")
    (tmp_path / "images").mkdir()
    blocked = tmp_path / "a_file" / "sub"
    out = _run("predict.py", f"model_file={tmp_path / 'model.ckpt'}", f"input_dir={tmp_path / 'images'}",
               f"output_dir={blocked}", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"output_dir='{blocked}'" in out.stderr and "Traceback" not in out.stderr
    # the run folder Hydra itself creates (under paths.log_dir), before Hydra's own mkdir fails
    out = _run("predict.py", f"model_file={tmp_path / 'model.ckpt'}", f"input_dir={tmp_path / 'images'}",
               f"paths.log_dir={blocked}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "hydra.run.dir=" in out.stderr and "paths.log_dir" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("script, args, expected", [
    ("train.py", ["data.no_such_key=3"], "Could not override 'data.no_such_key'"),
    ("train.py", ["model=no_such_model"], "Could not find 'model/no_such_model'"),
    ("train.py", ["trainer.max_epochs=[1,"], "no viable alternative at input"),
    ("predict.py", ["+model_file=x", "no_such=1"], "Could not override 'no_such'"),
    ("report.py", ["dir=x", "no_such_key=1"], "Could not override 'no_such_key'"),
])
def test_config_hydra_cannot_compose_is_exit_2(script, args, expected, tmp_path):
    out = _run(script, *args, cwd=tmp_path)  # Hydra fails before it creates any folder
    assert out.returncode == 2, out.stderr[-2000:]
    assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_exit_status_1_after_the_task_started_stays_a_bug(monkeypatch):
    import madd.cli

    def hydra_reports_a_bug():
        raise SystemExit(1)

    monkeypatch.setattr(madd.cli, "_task_started", False)
    with pytest.raises(SystemExit) as exit_:
        madd.cli.run_hydra(hydra_reports_a_bug)
    assert exit_.value.code == 2  # nothing ran: Hydra could not compose the config
    monkeypatch.setattr(madd.cli, "_task_started", True)
    with pytest.raises(SystemExit) as exit_:
        madd.cli.run_hydra(hydra_reports_a_bug)
    assert exit_.value.code == 1


def test_hydra_full_error_keeps_the_trace_of_a_user_error(tmp_path, data_dir, monkeypatch, nothing_built):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    cfg = compose_config(["trainer=debug", *TINY, "data.batch_size=0"], tmp_path, data_dir)
    with pytest.raises(MaddConfigError, match="data.batch_size=0"):  # re-raised, not SystemExit(2)
        run_task(train, cfg)


def test_internal_bug_keeps_its_traceback(tmp_path, data_dir):
    cfg = compose_config(["trainer=debug", *TINY], tmp_path, data_dir)

    def buggy(_):
        raise ZeroDivisionError("a bug, not a user error")

    with pytest.raises(ZeroDivisionError):
        run_task(buggy, cfg)


# ---------------------------------------------------------------------- SIGTERM / SIGINT
SIGNAL_RUN = ["trainer.max_epochs=60", *TINY, "callbacks.rich_progress_bar=null"]


def _start(run_dir: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    args = [*SIGNAL_RUN, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=run_dir.parent, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path, signum: int) -> tuple[int, str]:
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), "no checkpoint was written"
    time.sleep(1.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_sigterm_stops_records_and_resumes(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    code, err = _signal_after_first_checkpoint(_start(run_dir, data_dir), run_dir, signal.SIGTERM)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted by SIGTERM" in err and f"Resumable checkpoint: {last}" in err
    assert f"ckpt_path={last}" in err and "Traceback" not in err
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["resume"]["ckpt_path"] == str(last)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] > 0 and "optimizer_states" in state and "madd_config" in state
    # resume with the printed checkpoint: training finishes, tested and recorded
    resumed = tmp_path / "resumed"
    out = _run("train.py", *[a for a in SIGNAL_RUN if not a.startswith("trainer.max_epochs")],
               f"trainer.max_epochs={state['epoch'] + 2}", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={resumed}", f"ckpt_path={last}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Restored all states from the checkpoint" in out.stderr + out.stdout
    assert json.loads((resumed / "metrics.json").read_text())["status"] == "completed"


def test_sigint_stops_at_a_safe_point(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    code, err = _signal_after_first_checkpoint(_start(run_dir, data_dir), run_dir, signal.SIGINT)
    assert code == 128 + signal.SIGINT, err[-3000:]
    assert "interrupted by SIGINT" in err and "ckpt_path=" in err
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_before_training_is_recorded_as_interrupted(signum, tmp_path, data_dir, capsys):
    """A signal while data and models are being set up (no Lightning loop yet) still ends with a run record."""
    cfg = compose_config(["trainer=debug", *TINY], tmp_path, data_dir)

    def setting_up(_):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("the signal was not handled")

    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exit_:
        run_task(setting_up, cfg)
    assert exit_.value.code == 128 + signum
    assert signal.getsignal(signum) is before  # the handler is the caller's again
    err = capsys.readouterr().err
    assert f"run interrupted by {signal.Signals(signum).name} outside a training loop" in err
    assert "no checkpoint was written" in err and "Traceback" not in err
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "interrupted"


def test_report_lists_an_interrupted_job_as_not_completed(tmp_path):
    from madd.reporting.collect import load_job

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / "metrics.json").write_text(json.dumps({"status": "interrupted", "metrics": {"val/mAP": 0.5},
                                                  "error": "RunInterrupted: training interrupted by SIGTERM"}))
    row = load_job(job, tmp_path)
    assert row["status"] == "interrupted" and "SIGTERM" in row["error"]


# ---------------------------------------------------------------------- multiruns
RESIDENT: list[tuple[float, int]] = []


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class MemoryProbe(Callback):
    """A Hydra callback (``+hydra.callbacks.probe._target_=test_user_errors.MemoryProbe``) recording, after
    every job, the resident memory and how many ``nn.Module`` objects are still alive."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        import gc

        gc.collect()
        modules = sum(1 for o in gc.get_objects() if isinstance(o, torch.nn.Module))
        RESIDENT.append((resident_mb(), modules))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_multirun_releases_each_jobs_memory(tmp_path, data_dir, monkeypatch):
    """8 jobs in one process; the first 4 fail after their model and data are built (a label budget larger than
    the data), the other 4 train. Before the fix each failed job's exception kept its model, data and trainer
    alive until the sweep ended."""
    RESIDENT.clear()
    argv = ["-m", *FAST, "seed=0,1,2,3", "data.label_budget.total=1000,10",
            f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 's'}",
            "+hydra.callbacks.probe._target_=test_user_errors.MemoryProbe"]
    with pytest.raises(SystemExit) as exit_:  # the basic sweeper raises the first failure after the batch
        run_train_main(argv, monkeypatch)
    assert exit_.value.code == 1
    assert len(RESIDENT) == 8
    statuses = [json.loads((tmp_path / "s" / str(i) / "metrics.json").read_text())["status"] for i in range(8)]
    assert sorted(statuses) == ["completed"] * 4 + ["failed"] * 4
    print("resident MB, live modules after each job:", RESIDENT)
    assert RESIDENT[-1][1] <= RESIDENT[0][1], RESIDENT  # nothing of a finished job stays alive
    # resident memory after the last job of each kind within 60 MB of the first of that kind (the first job that
    # trains pays one-off costs: optimiser state, cached images, allocator pools). A kept ResNet-18 job holds
    # ~45 MB of weights alone: before the fix the 3 later failed jobs added ~130 MB.
    for kind in ("failed", "completed"):
        runs = [mb for (mb, _), status in zip(RESIDENT, statuses) if status == kind]
        assert runs[-1] - runs[0] < 60, (kind, RESIDENT)


def _preflight_refuses(sweep: list[str], tmp_path, data_dir, monkeypatch, capsys) -> str:
    """``train.py -m <sweep>`` (ResNet-18, no weight files) exits 2 before any job; its stderr."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weight files
    argv = ["-m", *FAST, "model/backbone=resnet18", *sweep,
            f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"hydra.sweep.dir={tmp_path / 's'}"]
    with pytest.raises(SystemExit) as exit_:
        run_train_main(argv, monkeypatch)
    assert exit_.value.code == 2
    assert not any(p.is_dir() for p in (tmp_path / "s").glob("[0-9]*"))  # no job started
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_sweep_preflight_lists_jobs_that_cannot_run(tmp_path, data_dir, monkeypatch, capsys):
    err = _preflight_refuses(["model.backbone.weights=null,IMAGENET1K_V1", "data.batch_size=4,0"],
                             tmp_path, data_dir, monkeypatch, capsys)
    assert "3 of 4 sweep jobs cannot run" in err
    # the jobs by reason, each with the swept values of one of them
    assert "jobs #2-3 (e.g. #2: data.batch_size=0 model.backbone.weights=null)" in err  # the typed check, per job
    assert "jobs #1 (e.g. #1: data.batch_size=4 model.backbone.weights=IMAGENET1K_V1)" in err
    assert "model.backbone.weights=IMAGENET1K_V1 needs" in err  # the weight file, built once per setting


def test_optuna_search_space_is_checked_before_the_first_trial(tmp_path, data_dir, monkeypatch, capsys):
    """Optuna picks its trials as it goes; the values of its search space that cannot run are named up front."""
    err = _preflight_refuses(["hparams_search=supervised_optuna", "hydra.sweeper.n_trials=2",
                              "model.backbone.weights=null,IMAGENET1K_V1", "data.batch_size=choice(4,0)"],
                             tmp_path, data_dir, monkeypatch, capsys)
    # corners: the first values (weights null, batch 4), then one parameter changed at a time: the preset's
    # three (lr, weight decay, label smoothing), IMAGENET1K_V1 (no file) and batch 0 (out of range)
    assert "2 of 6 corners of the search space (trials) cannot run" in err
    assert "data.batch_size=0" in err and "model.backbone.weights=IMAGENET1K_V1 needs" in err


def test_search_space_jobs_vary_one_parameter_at_a_time():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from madd.hydra_callbacks import search_space_jobs

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", ["hparams_search=supervised_optuna", "+hydra.sweeper.params.a='choice(x,y,z)'",
                                "+hydra.sweeper.params.b='interval(0.5,2.0)'",
                                "+hydra.sweeper.params.c='int(interval(1,8))'", "seed=3"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        jobs = search_space_jobs(cfg)
    fixed = [j for j in jobs[0] if j.split("=")[0] not in ("a", "b", "c")]  # and the preset's lr, wd, smoothing
    varied = [[j for j in job if j not in fixed] for job in jobs if set(fixed) <= set(job)]
    assert varied == [
        ["a=x", "b=0.5", "c=1"], ["a=y", "b=0.5", "c=1"], ["a=z", "b=0.5", "c=1"],
        ["a=x", "b=2.0", "c=1"], ["a=x", "b=0.5", "c=8"]]
    assert "seed=3" in fixed
