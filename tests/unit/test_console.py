"""The ``madd`` command (madd.console): the same tasks and configs as the root scripts, one exit contract."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO


def _madd(*args: str, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "madd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_console_script_is_declared():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib needs Python 3.11; madd supports 3.10)
    assert '[project.scripts]\n' in text and '\nmadd = "madd.console:main"\n' in text.split("[project.scripts]")[1]


def test_help_lists_every_command():
    from madd.console import HYDRA_COMMANDS, MODULE_COMMANDS

    proc = _madd("--help")
    assert proc.returncode == 0
    for name in [*HYDRA_COMMANDS, *MODULE_COMMANDS]:
        assert f"  {name} " in proc.stdout


def test_unknown_command_exits_2_with_one_message():
    proc = _madd("trian")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown command 'trian'" in proc.stderr and "train" in proc.stderr


def test_train_composes_what_train_py_composes(tmp_path):
    """`madd train` from any folder reads the checkout's conf/ and roots the run where train.py would."""
    args = ["--cfg", "job", "experiment=madd_awdd", "seed=3"]
    ours = _madd("train", *args, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert ours.returncode == 0 == script.returncode, ours.stderr[-2000:] + script.stderr[-2000:]
    assert ours.stdout == script.stdout and "task_name: madd_awdd" in ours.stdout


def test_hydra_and_module_commands_keep_the_bad_input_contract(tmp_path):
    bad_key = _madd("train", "data.no_such_key=3", cwd=tmp_path)  # Hydra cannot compose: 2, no traceback
    assert bad_key.returncode == 2 and "Traceback" not in bad_key.stderr
    missing = _madd("cost", str(tmp_path / "no_run"))  # a module command's MaddConfigError: 2, one message
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("madd error:")


def test_no_config_folder_is_a_clear_error(tmp_path, monkeypatch):
    proc = _madd("report", cwd=tmp_path, env={"MADD_CONFIG_DIR": str(tmp_path / "nowhere")})
    # MADD_CONFIG_DIR is tried first, then ./conf, then the checkout's: the checkout's still answers here
    assert "no config folder" not in proc.stderr
    from madd import console
    from madd.utils import config_dir

    # a wheel install without a checkout: nothing to fall back to
    monkeypatch.setattr(config_dir, "CHECKOUT_CONF", tmp_path / "site-packages" / "conf")
    monkeypatch.setenv("MADD_CONFIG_DIR", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        console.config_dir()
    assert exit_.value.code == 2


def test_moved_report_modules_still_run_under_their_old_names():
    """``python -m madd.compression.kfold_summary`` and ``python -m madd.models.segmentation.report`` (the reports
    moved to madd.reporting) still run the report: without arguments, its usage error and exit status 2."""
    for old, usage in (("madd.compression.kfold_summary", "madd kfold-summary dir="),
                       ("madd.models.segmentation.report", "dir=")):
        proc = subprocess.run([sys.executable, "-m", old], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and usage in proc.stderr and "Traceback" not in proc.stderr, (old, proc.stderr)
