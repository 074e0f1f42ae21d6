"""A training stage a method declares and the pipeline runs (:func:`madd.pipeline.run_stage`).

A method with stages besides its main fit (MADD: TIM's two stages before it, Phase 3 after it) yields them from
``stages()`` (before the main fit) and ``post_stages()`` (after it, starting from the main fit's best weights).
The pipeline alone builds each stage's trainer (its checkpoints go to ``<output_dir>/<name>/checkpoints``), serves
the stage's training splits, fits, and hands the fitted module and its best checkpoint to ``finish``; when a run
resumes its main fit (``ckpt_path``), the stages before it are skipped (that checkpoint holds their result).
Declarations are generators, so a stage can be built from what the previous stage's ``finish`` handed on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L


@dataclass
class Stage:
    """One stage: what to fit, how, and what it hands to the next.

    Attributes:
        name: the stage's output folder (``<output_dir>/<name>``), e.g. ``tim_stage1_source``.
        module: the LightningModule the stage fits.
        trainer: overrides of the run's ``trainer`` config (``max_epochs``, ``limit_train_batches``, ...).
        splits: the training splits the data module serves (``None``: ``module.train_splits()``).
        callbacks: ``callbacks(trainer) -> [Callback, ...]``, put first in the stage trainer's callbacks (before
            the checkpoint callbacks, so e.g. pruning masks are applied before each save).
        finish: ``finish(module, best_checkpoint) -> result`` with ``best_checkpoint`` the path of the stage's best
            checkpoint or ``""``; the result is what :func:`madd.pipeline.run_stage` returns.
    """

    name: str
    module: L.LightningModule
    finish: Callable[[L.LightningModule, str], Any]
    trainer: dict[str, Any] = field(default_factory=dict)
    splits: Sequence[str] | None = None
    callbacks: Callable[[L.Trainer], Sequence[L.Callback]] | None = None
