"""Cross-rank gathering for statistics that must see every rank's samples (CORAL, MMD, memory bank)."""

from __future__ import annotations

import lightning as L
import torch


def gather_rows(module: L.LightningModule, x: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
    """Concatenate ``x`` ``(n, ...)`` over all ranks into ``(world * n, ...)``; ``x`` itself on one process.

    ``sync_grads=True`` keeps the autograd graph (each rank backpropagates into its own rows), which the
    CORAL/MMD losses need. Every rank must pass the same ``n`` (training loaders drop the last batch).
    """
    trainer = module._trainer
    if trainer is None or trainer.world_size <= 1:
        return x
    return module.all_gather(x, sync_grads=sync_grads).flatten(0, 1)
