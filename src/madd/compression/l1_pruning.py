"""Li et al. (2017) L1-norm filter pruning in rounds, as a Lightning callback.

Schedule within one ``fit`` of ``trainer.max_epochs`` epochs::

    epochs [0, train_epochs)                          train the unpruned network ("baseline")
    round r = 1..rounds, at epoch train_epochs + (r-1) * finetune_epochs:
        score every filter by s_j = sum |F_j| (Li et al., Sec. 3.1), zero the `rate` lowest-scoring
        filters of each channel group among those still alive, fine-tune `finetune_epochs` epochs with
        the pruned filters (and their BatchNorm channels) held at zero after every optimiser step

``train_epochs`` defaults to ``max_epochs - rounds * finetune_epochs``; ``train_epochs=0`` prunes an
already trained model (load it with ``ckpt_path`` weights or as a distillation student). Rates compound:
3 rounds of 30% keep 0.7^3 = 34% of each group's channels (the pruned-ResNet paper's p1 = p2 = p3 = 30%).
The network is evaluated (on ``eval_split``) and measured before round 1 and at the end of every round.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from madd.compression.pruning_callback import FilterPruningCallback
from madd.compression.masks import apply_masks, compute_masks
from madd.errors import MaddConfigError


class L1FilterPruning(FilterPruningCallback):
    """Args (besides :class:`FilterPruningCallback`'s):
        rate: share of the alive filters pruned per round (0.3).
        rounds: number of prune + fine-tune rounds (3).
        finetune_epochs: epochs of fine-tuning after each round.
        train_epochs: epochs before round 1 (default: what ``trainer.max_epochs`` leaves).
        norm_p: the filter norm (1 = Li et al.'s L1).
        finetune_lr_factor: during the rounds, hold every learning rate at this factor times its initial
            value (Li et al. fine-tune at a constant, small rate); ``None`` leaves the LR scheduler in charge,
            which after a decaying schedule can leave almost no rate to recover with.
    """

    def __init__(self, rate: float = 0.3, rounds: int = 3, finetune_epochs: int = 1, train_epochs: int | None = None,
                 norm_p: int = 1, finetune_lr_factor: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if finetune_lr_factor is not None and not finetune_lr_factor > 0:
            raise MaddConfigError(f"callbacks.l1_pruning.finetune_lr_factor={finetune_lr_factor} must be > 0 or null")
        self.finetune_lr_factor = finetune_lr_factor
        if not 0 < rate < 1:
            raise MaddConfigError(f"callbacks.l1_pruning.rate={rate} must be in (0, 1)")
        if rounds < 1 or finetune_epochs < 1:
            raise MaddConfigError(f"callbacks.l1_pruning.rounds={rounds} and finetune_epochs={finetune_epochs} must be >= 1")
        self.rate, self.rounds, self.finetune_epochs = rate, rounds, finetune_epochs
        self.train_epochs = train_epochs
        self.norm_p = norm_p
        self.rounds_done = 0

    def extra_state(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state.get("rounds_done", 0))

    def prune_epochs(self) -> list[int]:
        return [self.train_epochs + r * self.finetune_epochs for r in range(self.rounds)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        needed = self.rounds * self.finetune_epochs
        if max_epochs is None or max_epochs < 0:
            raise MaddConfigError("L1 filter pruning needs trainer.max_epochs (its rounds are scheduled in epochs)")
        if self.train_epochs is None:
            self.train_epochs = max_epochs - needed
        if self.train_epochs < 0 or self.train_epochs + needed > max_epochs:
            raise MaddConfigError(
                f"trainer.max_epochs={max_epochs} is too short for train_epochs={self.train_epochs} + rounds={self.rounds} "
                f"x finetune_epochs={self.finetune_epochs}; raise trainer.max_epochs or lower callbacks.l1_pruning.*"
            )

    def _hold_finetune_lr(self, trainer: L.Trainer) -> None:
        """Every param group's LR := ``finetune_lr_factor`` x its initial LR, re-set at each epoch start (after the
        scheduler's epoch step). The initial LR is kept in the group (``madd_base_lr``), so it is checkpointed with
        the optimizer state and a resumed run holds the same rate."""
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("madd_base_lr", group.get("initial_lr", group["lr"]))
                group["lr"] = self.finetune_lr_factor * group["madd_base_lr"]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs = self.prune_epochs()
        epoch = trainer.current_epoch
        if self.finetune_lr_factor is not None and epoch >= epochs[0]:
            self._hold_finetune_lr(trainer)
        if epoch not in epochs or self.rounds_done > epochs.index(epoch):
            return
        stage = "baseline" if self.rounds_done == 0 else f"round {self.rounds_done}"
        self.rows.append(self.stage_row(trainer, pl_module, stage, self.masks))
        net = self.target(pl_module)
        self.masks = compute_masks(net, self.groups, self.rate, self.norm_p, previous=self.masks or None,
                                   round_to=self.round_to)
        apply_masks(net, self.groups, self.masks, hard=True)
        self.rounds_done += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.masks:
            apply_masks(self.target(pl_module), self.groups, self.masks, hard=True)  # held at zero (Li et al.)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.masks:
            pl_module.log("prune/kept_channels", sum(int(m.sum()) for m in self.masks.values())
                          / sum(m.numel() for m in self.masks.values()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.rounds_done == 0:
            return  # interrupted before the first round: nothing pruned, nothing to report
        last = f"round {self.rounds_done}"
        if not self.rows or self.rows[-1]["stage"] != last:
            self.rows.append(self.stage_row(trainer, pl_module, last, self.masks))
        self.finish(trainer, pl_module)
