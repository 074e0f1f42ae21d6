"""Soft filter pruning (SFP, He et al. 2018) and asymptotic soft filter pruning (ASFP, He et al. 2019).

After every training epoch the ``int(N * P(t))`` filters with the smallest L2 norm in each channel group
(of all N, so a filter pruned before can come back) are set to zero, and training continues with the
pruned filters still receiving gradients (Sec. III of ASFP). Here ``rate`` is the share *pruned*; the
official SFP code's ``rate`` is the share kept.

* SFP: ``P(t) = rate`` from the first epoch.
* ASFP: ``P(t) = a exp(-k t) + b`` with ``P(0) = 0``, ``P(E/8) = 3/4 rate`` and ``P(E) = rate`` (the
  schedule of the independent implementations, NOTES.md), ``t`` = epochs done, ``E`` = ``max_epochs``.

Masks are applied at the end of an epoch's last training batch, so validation and the epoch's checkpoint
see the masked network. After the last epoch the mask becomes *hard* (BatchNorm channels zeroed too), the
state that physical removal reproduces exactly; the report's ``final`` row is that network.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
from scipy.optimize import brentq

from madd.compression.pruning_callback import FilterPruningCallback
from madd.compression.masks import apply_masks, compute_masks
from madd.errors import MaddConfigError

SCHEDULES = ("constant", "asymptotic")


@functools.lru_cache(maxsize=1)
def _asfp_base() -> float:
    """``x = exp(-k E / 8)`` solving ``(1 - x) / (1 - x^8) = 3/4`` (the root in (0, 1) other than x = 1)."""
    f = lambda x: 4.0 * (1.0 - x) - 3.0 * (1.0 - x**8)  # noqa: E731
    # f(0) = 1 > 0 and f is decreasing up to its minimum at x = 6^(-1/7) ~ 0.774, where it is negative
    return brentq(f, 0.0, 6.0 ** (-1.0 / 7.0), xtol=1e-14)


def asfp_rate(t: float, total_epochs: int, target: float) -> float:
    """ASFP's pruning rate after ``t`` of ``total_epochs`` epochs (ASFP, Sec. III-C, exponential schedule).

    ``P(t) = b (1 - exp(-k t))`` with ``exp(-k E/8) = x`` from :func:`_asfp_base` and ``b = target / (1 - x^8)``;
    about ``target * (1 - 4^(-8 t / E))``. Capped at ``target`` and equal to it at ``t >= E``.
    """
    if t >= total_epochs:
        return float(target)
    x = _asfp_base()
    rate = target * (1.0 - x ** (8.0 * t / total_epochs)) / (1.0 - x**8)
    return float(min(max(rate, 0.0), target))


class SoftFilterPruning(FilterPruningCallback):
    """Args (besides :class:`FilterPruningCallback`'s, whose ``scope`` defaults to ``all`` here: the
    SFP code prunes every convolution):
        rate: target share of filters pruned per group.
        schedule: ``constant`` (SFP) or ``asymptotic`` (ASFP).
        norm_p: filter norm (2, as SFP/ASFP).
    """

    def __init__(self, rate: float = 0.3, schedule: str = "asymptotic", norm_p: int = 2, scope: str = "all",
                 **kwargs: Any) -> None:
        super().__init__(scope=scope, **kwargs)
        if not 0 < rate < 1:
            raise MaddConfigError(f"soft pruning rate={rate} must be in (0, 1)")
        if schedule not in SCHEDULES:
            raise MaddConfigError(f"soft pruning schedule={schedule!r} is unknown; choose from {list(SCHEDULES)}")
        self.rate, self.schedule, self.norm_p = rate, schedule, norm_p
        self.masked_epoch = -1

    def extra_state(self) -> dict[str, Any]:
        return {"masked_epoch": self.masked_epoch}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.masked_epoch = int(state.get("masked_epoch", -1))

    def rate_at(self, epochs_done: int, total_epochs: int) -> float:
        if self.schedule == "constant":
            return self.rate
        return asfp_rate(epochs_done, total_epochs, self.rate)

    def _mask(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs_done: int, hard: bool) -> None:
        rate = self.rate_at(epochs_done, trainer.max_epochs)
        net = self.target(pl_module)
        self.masks = compute_masks(net, self.groups, rate, self.norm_p, previous=None, round_to=self.round_to)
        apply_masks(net, self.groups, self.masks, hard=hard)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise MaddConfigError("soft filter pruning needs trainer.max_epochs (its schedule is in epochs)")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # No mask before the first epoch (SFP's Algorithm 1 masks after each epoch's training): a filter zeroed
        # at initialisation, where BatchNorm's shift is 0, feeds ReLU exactly 0, gets no gradient and never recovers.
        if not self.rows:  # a fresh run, not a resume: the unpruned network's cost
            self.rows.append(self.stage_row(trainer, pl_module, "unpruned", None, with_metrics=False))

    def _end_of_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.masked_epoch == epoch:
            return
        last = epoch + 1 >= trainer.max_epochs
        self._mask(trainer, pl_module, epoch + 1, hard=last)
        self.masked_epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:  # before this epoch's validation and checkpoint
            self._end_of_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_of_epoch(trainer, pl_module)
        pl_module.log("prune/rate", self.rate_at(trainer.current_epoch + 1, trainer.max_epochs))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.masks is None:
            return
        apply_masks(self.target(pl_module), self.groups, self.masks, hard=True)  # also when stopped early
        if not self.rows or self.rows[-1]["stage"] != "final":
            self.rows.append(self.stage_row(trainer, pl_module, "final", self.masks))
        self.finish(trainer, pl_module)
