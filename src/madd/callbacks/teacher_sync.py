"""MADD's teacher update (section 2.5): the teacher receives student A's weights every ``n`` epochs, or follows
it by an exponential moving average every step (``mode="ema"``, the Mean Teacher variant).

The model owns the networks and the sync counter (a buffer, so it is in every checkpoint); this callback
only decides *when*. The copy happens at the **start** of epoch ``k·n`` (after ``k·n`` finished epochs),
not at the end of the previous one: the end-of-epoch checkpoint is written before ``on_train_epoch_end``
callbacks run, so a run resumed from ``last.ckpt`` would otherwise miss the sync the uninterrupted run made.
Under DDP every rank copies its own (identical) student A: one sync per sync point, no communication.
"""

from __future__ import annotations

import lightning as L

from madd.errors import MaddConfigError


class TeacherSync(L.Callback):
    """Calls ``pl_module.sync_teacher()`` every ``every_n_epochs`` epochs (``mode="copy"``) or
    ``pl_module.ema_teacher(ema_decay)`` after every optimiser step (``mode="ema"``)."""

    def __init__(self, every_n_epochs: int = 5, mode: str = "copy", ema_decay: float = 0.99) -> None:
        if mode not in ("copy", "ema"):
            raise MaddConfigError(f"model.teacher_sync.mode={mode!r}: choose copy or ema")
        if every_n_epochs < 1:
            raise MaddConfigError(f"model.teacher_sync.every_n_epochs={every_n_epochs} must be >= 1")
        if not 0.0 <= ema_decay <= 1.0:
            raise MaddConfigError(f"model.teacher_sync.ema_decay={ema_decay} must be in [0, 1]")
        self.every_n_epochs, self.mode, self.ema_decay = every_n_epochs, mode, ema_decay
        self._last_ema_step = -1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.mode == "copy" and epoch > 0 and epoch % self.every_n_epochs == 0:
            pl_module.sync_teacher()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.mode != "ema" or trainer.global_step == self._last_ema_step:  # no optimiser step: nothing new
            return
        self._last_ema_step = trainer.global_step
        pl_module.ema_teacher(self.ema_decay)
