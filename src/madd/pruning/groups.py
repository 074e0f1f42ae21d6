"""Which output channels can be pruned together: torch-pruning's dependency graph, reduced to names.

A *channel group* is a set of output channels that must be removed together so the network stays
consistent: a block-internal convolution's filters with their BatchNorm channels and the next
convolution's input channels, or a whole *residual stream* (every convolution that writes into one
residual sum: the stem or the 1x1 downsample convolution plus each block's last convolution). The
coupling comes from ``torch_pruning.DependencyGraph``; this module only keeps the names of the layers
involved, so a group found on one copy of a network can be applied to another copy (the live model
in training, a fresh model rebuilt from a checkpoint).

Scopes (which groups a pruning method may touch):

* ``inner``: groups with exactly one (non-depthwise) producing convolution, i.e. channels that do not
  pass through a residual sum. On ResNets these are the block-internal convolutions (``conv1`` of a
  basic block, ``conv1``/``conv2`` of a bottleneck); block outputs, shortcuts and downsample
  convolutions stay untouched. This is the widely used re-implementation of Li et al. (NOTES.md).
* ``all``: every convolution group, residual streams included (scored by the summed filter norms of
  all their producers). This is what removal needs for SFP's "every conv but the downsample convs":
  a downsample conv writes into the same residual channels as the blocks' last convolutions, so the
  two can only be removed together.

``include``/``exclude`` regular expressions over the producing convolutions' names narrow the scope
further (a group is kept when any producer matches ``include`` and none matches ``exclude``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from madd.errors import MaddConfigError

SCOPES = ("inner", "all")


def is_depthwise(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


@dataclass
class ChannelGroup:
    """Names of the layers that share one prunable channel dimension of size ``size``.

    ``producers``: convolutions (and linear layers) whose outputs are this dimension; ``depthwise``: depthwise
    convolutions that pass the channels through; ``norms``: BatchNorms over this dimension.
    ``key`` (the first producer name, sorted) identifies the group across copies of a network.
    """

    producers: list[str]
    norms: list[str]
    size: int
    depthwise: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return sorted(self.producers + self.depthwise)[0]

    @property
    def is_residual(self) -> bool:
        return len(self.producers) > 1


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model`` traced with ``example_input``.

    Tracing runs one forward pass with autograd on, so it is done on a copy in eval mode by callers
    that must not disturb BatchNorm statistics (see :func:`find_groups`).
    """
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


#: normalisations that mix channels: removing a channel changes the statistics of the others, so a group
#: coupled to one cannot be removed exactly and is never pruned (e.g. the LayerNorm of MADD's adapter)
CHANNEL_MIXING = (nn.LayerNorm, nn.GroupNorm)


def _groups_of_graph(graph: tp.DependencyGraph, model: nn.Module) -> list[ChannelGroup]:
    names = {m: n for n, m in model.named_modules()}
    out = []
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d]):
        producers, depthwise, norms, mixing = [], [], [], False
        for dep, _ in group:
            layer = dep.target.module
            writes = graph.is_out_channel_pruning_fn(dep.handler)
            if isinstance(layer, nn.Conv2d) and writes:
                (depthwise if is_depthwise(layer) else producers).append(names[layer])
            elif isinstance(layer, nn.Linear) and writes:  # e.g. an adapter's up-projection added to the features
                producers.append(names[layer])
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
                norms.append(names[layer])
            mixing |= isinstance(layer, CHANNEL_MIXING)
        if not producers or mixing:
            continue
        size = len(group[0].idxs)
        out.append(ChannelGroup(sorted(set(producers)), sorted(set(norms)), size, sorted(set(depthwise))))
    return sorted(out, key=lambda g: g.key)


def find_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    scope: str = "inner",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[ChannelGroup]:
    """The prunable channel groups of ``model`` within ``scope``, traced on a CPU copy in eval mode."""
    if scope not in SCOPES:
        raise MaddConfigError(f"pruning scope={scope!r} is unknown; choose from {list(SCOPES)}")
    import copy

    probe = copy.deepcopy(model).cpu().eval()
    groups = _groups_of_graph(build_graph(probe, example_input.detach().cpu()), probe)
    if scope == "inner":
        groups = [g for g in groups if not g.is_residual]
    inc = [re.compile(p) for p in include or ()]
    exc = [re.compile(p) for p in exclude or ()]
    if inc:
        groups = [g for g in groups if any(p.search(n) for p in inc for n in g.producers)]
    if exc:
        groups = [g for g in groups if not any(p.search(n) for p in exc for n in g.producers)]
    if not groups:
        raise MaddConfigError(
            f"no prunable convolution group matches scope={scope!r}, include={list(include or [])}, "
            f"exclude={list(exclude or [])}; widen the pruning scope or fix the patterns"
        )
    return groups


def filter_norms(model: nn.Module, group: ChannelGroup, p: int = 1) -> torch.Tensor:
    """Importance of each channel: the sum over the group's producers of ``||F_c||_p``.

    For a single producer this is Li et al.'s ``s_j = sum |F_j|`` (p=1) and SFP's ``||F_j||_2`` (p=2).
    Hand-written because torch-pruning's ``GroupMagnitudeImportance`` also counts the consumers'
    input weights and the BatchNorm scales, which is not the papers' criterion.
    """
    modules = dict(model.named_modules())
    total = None
    for name in group.producers:
        w = modules[name].weight.detach().flatten(1).float()
        norm = torch.linalg.vector_norm(w, ord=p, dim=1)
        total = norm if total is None else total + norm
    return total
