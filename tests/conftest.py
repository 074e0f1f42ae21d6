"""Shared test fixtures and the suite's process settings (one thread, W&B offline). Plain helpers (paths,
``compose_config``, the tiny-data overrides) are in ``tests/helpers``: ``from helpers import ...``."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session (generation is cached by parameters)."""
    return tmp_path_factory.mktemp("madd_data")
