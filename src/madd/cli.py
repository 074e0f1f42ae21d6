"""Task wrapper shared by the command-line entry points: one exit path for every error a user can cause.

=========================================  =====================================================  ===========
what went wrong                            what the user sees                                     exit status
=========================================  =====================================================  ===========
bad input (:class:`MaddConfigError`,       ``madd error: <message naming the key/file and fix>``  2
``DataError``, ``TrainingError``)          on stderr, no traceback
run stopped by SIGTERM / Ctrl-C            where ``last.ckpt`` is and the command that resumes    143 / 130
(:class:`RunInterrupted`)                  it; ``metrics.json`` says ``interrupted`` (also when
                                           the signal came before or between training loops)
a config Hydra cannot compose (unknown     Hydra's one-line message (no traceback)                2
key, bad override, missing option)
anything else (a bug)                      the traceback (Hydra's short form)                     1
=========================================  =====================================================  ===========

``HYDRA_FULL_ERROR=1`` re-raises bad-input errors too, so their full traceback is printed for debugging.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel

from madd.errors import RunInterrupted, config_error_cause

log = logging.getLogger("madd")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _output_dir(cfg: DictConfig) -> str | None:
    try:
        return OmegaConf.select(cfg, "paths.output_dir", default=None)
    except Exception:  # an unresolvable output dir must not mask the real error
        return None


def _record_failure(cfg: DictConfig, err: BaseException, status: str = "failed", **extra) -> None:
    from madd.reporting.run_record import write_failure

    output_dir = _output_dir(cfg)
    if output_dir:
        write_failure(output_dir, err, status=status, **extra)


def resume_command(checkpoint: str) -> str:
    """The command line of this run with ``ckpt_path=<checkpoint>`` (replacing any earlier ``ckpt_path``)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        overrides = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith("ckpt_path=")]
        script = f"{hydra_cfg.job.name}.py"
    else:
        overrides, script = [], "train.py"
    return shlex.join(["python", script, *overrides, f"ckpt_path={checkpoint}"])


def _report_interrupted(cfg: DictConfig, err: RunInterrupted) -> None:
    if err.checkpoint:
        command = resume_command(err.checkpoint)
        text = f"{err}. Resumable checkpoint: {err.checkpoint}\nresume with:\n  {command}"
        extra = {"resume": {"ckpt_path": err.checkpoint, "command": command}}
    else:
        text = f"{err}; no checkpoint was written (callbacks.interrupt_checkpoint is off or training had not started)"
        extra = {}
    log.warning("%s", text)
    print(f"\nmadd: {text}", file=sys.stderr)
    _record_failure(cfg, err, status="interrupted", **extra)


def _detach(err: BaseException) -> None:
    """Drop the local variables of the finished frames in ``err``'s tracebacks (its causes' too).

    Hydra's launcher keeps every failed job's exception until the sweep ends; through the traceback's frames
    it would keep that job's model, data module and trainer alive (about a model's worth of memory per failed
    job). The traceback itself stays printable (file, line, code).
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)
        err = err.__cause__ or err.__context__


def release_memory() -> None:
    """What a finished multirun job may still hold: reference cycles, cached CUDA blocks, freed heap pages."""
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        import ctypes

        try:  # glibc keeps freed small blocks; hand them back (no-op on other C libraries)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


_task_started = False  # set by run_task: after that, Hydra's exit status 1 is a bug, not a composition error


def run_hydra(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; exit status 2 when Hydra could not compose the config.

    Hydra reports an unknown key, a bad override or a missing config option in one line and exits with status 1,
    the status of a bug. Those errors all come before :func:`run_task` is first called: status 1 before that is
    the user's input and becomes 2, the status of every other bad input; status 1 after that is a bug's and stays.
    """
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            raise SystemExit(2) from None
        raise


def _interrupt_outside_loops(signum, frame) -> None:
    """SIGTERM/SIGINT while no Lightning loop handles them (set-up, between stages): stop with a run record.

    During ``fit``/``test`` Lightning composes its own SIGTERM handler with this one and stops at a safe point
    itself (:class:`madd.callbacks.interrupt.InterruptCheckpoint`), so here only the handler installed last
    acts: when it is not this function, a loop is running and the signal is left to it.
    """
    if signal.getsignal(signum) is _interrupt_outside_loops:
        raise RunInterrupted(signum, None)


@contextlib.contextmanager
def _signals_to_run_interrupted():
    """Within the block, SIGTERM and SIGINT outside Lightning's loops raise :class:`RunInterrupted`."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        previous = {s: signal.signal(s, _interrupt_outside_loops) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig, schema: type[BaseModel] | None = None) -> Any:
    """Run ``task(cfg)`` and end every failure the way the module docstring says; always close W&B.

    With ``schema`` (:mod:`madd.utils.schema`) the config is checked against it first.

    A failure is recorded in ``<output_dir>/metrics.json`` (``status: failed`` or ``interrupted``) for
    ``report.py``. In a multirun a bad-input error or a bug is re-raised as an ordinary exception, never
    ``SystemExit``: Hydra's ``run_job`` then marks this job failed and the launcher goes on with the other jobs
    (the basic sweeper raises the first failure once the batch is done; the Optuna sweeper records a failed
    trial, see ``max_failure_rate``). An interruption ends the whole sweep. ``wandb.finish()`` runs even on
    failure so multirun jobs do not hang on a crashed run; in a multirun the job's memory is released.
    """
    global _task_started
    _task_started = True
    failed = False
    multirun = _in_multirun()
    try:
        with _signals_to_run_interrupted():
            if schema is not None:
                from madd.utils.config import check_config

                check_config(cfg, schema)
            return task(cfg)
    except RunInterrupted as err:
        failed = True
        _report_interrupted(cfg, err)
        raise SystemExit(err.exit_code) from None
    except Exception as err:
        failed = True
        user_error = config_error_cause(err)
        if user_error is not None:
            log.error("%s", user_error)
            print(f"\nmadd error: {user_error}", file=sys.stderr)
        elif multirun:  # the job's log file keeps the traceback; the sweep itself goes on
            log.exception("job failed: %s", err)
        _record_failure(cfg, user_error or err)
        if multirun:
            _detach(err)
            raise
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(2) from None
    except BaseException:  # a second Ctrl-C: the W&B run is marked failed too
        failed = True
        raise
    finally:
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)
        if multirun:
            release_memory()
