"""Shared test fixtures and the suite's process settings (one thread, W&B offline). Plain helpers (paths,
``compose_config``, the tiny-data overrides) are in ``tests/helpers``: ``from helpers import ...``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# subprocess runs of train.py inherit this (set before torch is imported)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

# one thread: on 2-core CI two OpenMP threads per process are several times slower than one
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts with one intra-op thread, whatever an earlier test left (a run's ``threads`` setting, a
    bench): on a shared, loaded CPU two threads wait on each other (measured ~25x slower)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def no_handlers_on_closed_streams():
    """Every test ends with no log handler writing to a closed stream. An in-process Hydra run (``hydra.main``, a
    multirun) gives the root logger a console handler on the ``sys.stdout`` of that moment (Hydra's job logging),
    which under ``capsys`` is a capture stream closed at the test's end; any later log record would then print
    ``--- Logging error ---`` and a traceback into that later test's stderr (seen as a failure of
    ``test_imagenet_weights_absent_is_a_clear_error`` after ``test_user_errors.py`` in the same process). Only
    those handlers go: pytest's own capture handlers and everything else a test configured stay as they are."""
    yield
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for lg in loggers:
        for handler in list(getattr(lg, "handlers", ())):  # loggerDict also holds placeholders, without handlers
            if getattr(getattr(handler, "stream", None), "closed", False):
                lg.removeHandler(handler)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generation is cached by parameters)."""
    return tmp_path_factory.mktemp("madd_data")
