"""Filter masks: choose the weakest filters of each channel group and hold them at zero.

A mask is a boolean "keep" vector per :class:`~madd.pruning.groups.ChannelGroup` (keyed by the
group's key), so it is a plain tensor dict that goes into checkpoints (``weights_only``-safe).

Two ways of zeroing (see :func:`apply_masks`):

* ``hard`` (Li et al.; the final state of every method): the producers' filters *and* the BatchNorm
  scale and shift of the pruned channels are zeroed. The channels then carry exactly 0, so removing
  them physically changes nothing (tested). Zeroing only the filters would leave the BatchNorm shift
  as a constant channel that removal would silently drop.
* ``soft`` (SFP/ASFP during training, as in the official SFP code): only the filters are zeroed; they
  keep receiving gradients (through BatchNorm) and may come back at the next epoch. Zeroing the
  BatchNorm scale as well would freeze them: with a zero scale the filter's gradient is zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from madd.pruning.groups import ChannelGroup, filter_norms

Masks = dict[str, torch.Tensor]


def keep_count(n_alive: int, rate: float, round_to: int | None = None) -> int:
    """Channels kept when pruning ``int(n_alive * rate)`` of ``n_alive`` (at least one is kept).

    ``round_to`` rounds the kept count up to a multiple (8 suits GPU/TensorRT kernels), never above
    ``n_alive``.
    """
    keep = max(1, n_alive - int(n_alive * rate))
    if round_to and round_to > 1:
        keep = min(n_alive, int(math.ceil(keep / round_to) * round_to))
    return keep


def lowest_norm_mask(importance: torch.Tensor, keep: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``keep`` highest-importance channels among ``alive`` ones (ties: lower index kept)."""
    imp = importance.detach().float().cpu().clone()
    if alive is not None:
        imp[~alive.cpu()] = -math.inf  # already pruned channels stay pruned (rounds compound)
    order = torch.sort(-imp, stable=True).indices
    mask = torch.zeros_like(imp, dtype=torch.bool)
    mask[order[:keep]] = True
    return mask


def compute_masks(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    rate: float,
    p: int = 1,
    previous: Mapping[str, torch.Tensor] | None = None,
    round_to: int | None = None,
) -> Masks:
    """One pruning step: in every group prune ``rate`` of the channels by filter ``p``-norm.

    With ``previous`` masks the rate applies to the channels still alive and pruned ones stay pruned
    (Li et al.'s rounds: 3 rounds of 30% keep 0.7^3 = 34% of the channels). Without, the rate applies
    to all channels and every channel competes again (SFP/ASFP: pruned filters can recover).
    """
    masks: Masks = {}
    for g in groups:
        alive = None if previous is None else previous.get(g.key)
        n_alive = g.size if alive is None else int(alive.sum())
        masks[g.key] = lowest_norm_mask(filter_norms(model, g, p), keep_count(n_alive, rate, round_to), alive)
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, groups: Sequence[ChannelGroup], masks: Mapping[str, torch.Tensor],
                hard: bool = True) -> None:
    """Zero the pruned channels' filters (and, when ``hard``, their BatchNorm scale and shift)."""
    modules = dict(model.named_modules())
    for g in groups:
        keep = masks.get(g.key)
        if keep is None:
            continue
        drop = ~keep.to(torch.bool)
        names = g.producers + g.depthwise + (g.norms if hard else [])
        for name in names:
            m = modules[name]
            idx = drop.to(m.weight.device)
            m.weight[idx] = 0
            if getattr(m, "bias", None) is not None:
                m.bias[idx] = 0


def kept_fraction(masks: Mapping[str, torch.Tensor]) -> float:
    """Share of the prunable channels still alive (over all groups)."""
    total = sum(m.numel() for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values()) / total) if total else 1.0
