"""MADD's two callbacks, added by the model itself (``MADDModule.configure_callbacks``), so ``model=madd`` works with
any ``callbacks=`` group.

**TeacherSync.** MADD's teacher update (section 2.5): the teacher receives student A's weights every ``n`` epochs, or follows
it by an exponential moving average every step (``mode="ema"``, the Mean Teacher variant).

The model owns the networks and the sync counter (a buffer, so it is in every checkpoint); this callback
only decides *when*. The copy happens at the **start** of epoch ``k·n`` (after ``k·n`` finished epochs),
not at the end of the previous one: the end-of-epoch checkpoint is written before ``on_train_epoch_end``
callbacks run, so a run resumed from ``last.ckpt`` would otherwise miss the sync the uninterrupted run made.
Under DDP every rank copies its own (identical) student A: one sync per sync point, no communication.

**LossWeightAdapter.** Adapt Eq. 17's loss weights from the validation F1 (section 2.8.1: "dynamically adjusted based on the F1 score
on the validation set"). The paper gives no rule; this one is small, bounded and documented:

After every validation, with ``delta = F1_now - F1_previous``:

* ``delta > tolerance`` (the unlabelled-data terms are helping): every *auxiliary* weight (default
  ``beta, gamma, delta, epsilon``) is multiplied by ``1 + step`` and the *supervised* weight ``alpha`` by
  ``1 - step``;
* ``delta < -tolerance`` (validation got worse): the opposite, back towards the labelled data;
* otherwise nothing changes.

Every adjusted weight is clipped to ``bounds`` = [0.05, 0.5], the range of the paper's sensitivity analysis
(section 3.3.3, which varies exactly alpha, beta, gamma, delta and epsilon). ``zeta`` and ``eta`` are not
adjusted, and a weight that is 0 (its term switched off) stays 0. The weights and the previous F1 are buffers
of the model, so they are saved in and resumed from checkpoints. Switch off with
``model.weight_adaptation.enabled=false`` (e.g. for sweeps over the weights themselves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L

from madd.errors import MaddConfigError
from madd.models.ema import warmup_decay


class TeacherSync(L.Callback):
    """Calls ``pl_module.sync_teacher()`` every ``every_n_epochs`` epochs (``mode="copy"``) or
    ``pl_module.ema_teacher(decay)`` after every optimiser step (``mode="ema"``): ``decay = ema_decay``, or with
    ``warmup`` Mean Teacher's warm-up :func:`~madd.models.ema.warmup_decay` of the fit's global step."""

    def __init__(self, every_n_epochs: int = 5, mode: str = "copy", ema_decay: float = 0.99,
                 warmup: bool = False) -> None:
        if mode not in ("copy", "ema"):
            raise MaddConfigError(f"model.teacher_sync.mode={mode!r}: choose copy or ema")
        if every_n_epochs < 1:
            raise MaddConfigError(f"model.teacher_sync.every_n_epochs={every_n_epochs} must be >= 1")
        if not 0.0 <= ema_decay <= 1.0:
            raise MaddConfigError(f"model.teacher_sync.ema_decay={ema_decay} must be in [0, 1]")
        self.every_n_epochs, self.mode, self.ema_decay, self.warmup = every_n_epochs, mode, ema_decay, warmup
        self._last_ema_step = -1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.mode == "copy" and epoch > 0 and epoch % self.every_n_epochs == 0:
            pl_module.sync_teacher()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.mode != "ema" or trainer.global_step == self._last_ema_step:  # no optimiser step: nothing new
            return
        step = self._last_ema_step = trainer.global_step
        pl_module.ema_teacher(warmup_decay(step, self.ema_decay) if self.warmup else self.ema_decay)


def adjust_weights(weights: Mapping[str, float], delta: float, step: float = 0.1, tolerance: float = 0.005,
                   bounds: tuple[float, float] = (0.05, 0.5), supervised: Sequence[str] = ("alpha",),
                   auxiliary: Sequence[str] = ("beta", "gamma", "delta", "epsilon")) -> dict[str, float]:
    """The rule above, as a pure function of the current weights and the F1 change."""
    out = dict(weights)
    if abs(delta) <= tolerance:
        return out
    sign = 1.0 if delta > 0 else -1.0
    lo, hi = bounds
    for names, direction in ((auxiliary, sign), (supervised, -sign)):
        for k in names:
            if out[k] > 0:
                out[k] = min(hi, max(lo, out[k] * (1.0 + direction * step)))
    return out


class LossWeightAdapter(L.Callback):
    """Applies :func:`adjust_weights` after each validation (before the checkpoint of that epoch is written)."""

    def __init__(self, monitor: str = "val/f1", step: float = 0.1, tolerance: float = 0.005,
                 bounds: tuple[float, float] = (0.05, 0.5), supervised: Sequence[str] = ("alpha",),
                 auxiliary: Sequence[str] = ("beta", "gamma", "delta", "epsilon")) -> None:
        self.monitor, self.step, self.tolerance = monitor, step, tolerance
        self.bounds, self.supervised, self.auxiliary = tuple(bounds), tuple(supervised), tuple(auxiliary)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        f1 = float(trainer.callback_metrics[self.monitor])
        previous = float(pl_module.last_val_f1)
        if previous >= 0:
            pl_module.set_weights(adjust_weights(pl_module.weights(), f1 - previous, self.step, self.tolerance,
                                                 self.bounds, self.supervised, self.auxiliary))
        pl_module.last_val_f1.fill_(f1)
