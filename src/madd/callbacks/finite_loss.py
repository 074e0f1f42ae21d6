"""Stop on a non-finite loss with a message naming the loss term, before anything is checkpointed."""

from __future__ import annotations

import math

import lightning as L
import torch

from madd.errors import MaddConfigError, TrainingError


class NonFiniteLossError(TrainingError):
    """Raised when a logged ``train/*`` value or the returned loss is NaN or infinite.

    A :class:`~madd.errors.TrainingError`: ``train.py`` prints its message and exits with status 2 (the fix is
    in the config: learning rate, loss weights), and the run record says ``failed``.
    """


class FiniteLossGuard(L.Callback):
    """Checks the step's returned loss and every logged ``train/`` value after each training batch.

    Raising here aborts ``fit`` before the epoch-end checkpoint, so ``last.ckpt`` and the best checkpoint
    keep the last good state. The message lists every non-finite term (e.g. ``train/loss_rec``).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bad = []
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            bad.append("loss (returned by training_step)")
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
                bad.append(key)
        if bad:
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"{', '.join(sorted(set(bad)))}. The last good checkpoint is kept; lower the learning rate or "
                "that loss term's weight, and resume with ckpt_path=<output_dir>/checkpoints/last.ckpt"
            )


def check_finite(name: str, value: float) -> None:
    """Validate a scalar config value (used for loss weights)."""
    if not math.isfinite(value):
        raise MaddConfigError(f"{name}={value} is not finite")
