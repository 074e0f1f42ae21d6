"""Image-level metrics of a model on one split, outside Lightning's loops (pruning rounds, benchmarks).

Uses the same :class:`madd.metrics.DefectMetrics` as training, so a pruning report's accuracy/mAP/DR/FAR
are the numbers ``val/…`` and ``test/…`` would show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from madd.metrics import DefectMetrics


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    loader: Iterable[dict],
    num_classes: int,
    normal_index: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """``mAP``, ``accuracy``, ``f1``, ``auroc`` (+ ``DR``/``FAR`` with a normal class) of ``forward`` on ``loader``."""
    module = forward if isinstance(forward, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    metrics = DefectMetrics(num_classes, normal_index).to(device)
    try:
        for batch in loader:
            logits = forward(batch["image"].to(device))
            metrics.update(logits.float().softmax(1), batch["label"].to(device))
        return metrics.compute()
    finally:
        if module is not None:
            module.train(was_training)
