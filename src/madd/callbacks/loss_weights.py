"""Adapt Eq. 17's loss weights from the validation F1 (section 2.8.1: "dynamically adjusted based on the F1 score
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
