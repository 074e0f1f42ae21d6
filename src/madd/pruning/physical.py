"""Physical removal of pruned channels with torch-pruning, and rebuilding pruned shapes from weights.

Masks only zero filters; parameters, FLOPs and latency drop only when the channels are cut out of the
tensors. ``torch_pruning.DependencyGraph`` does the cutting, so every coupled layer follows: BatchNorm
channels, the next convolution's input channels, all members of a residual sum (downsample
convolutions included) and the classifier's input features.

A physically pruned network is stored as a plain state dict. Its tensor shapes *are* the pruned
architecture: :func:`apply_architecture` shrinks a freshly built network to the shapes read from
a state dict (:func:`conv_widths`), after which ``load_state_dict`` works, with no pickled modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from madd.errors import MaddConfigError
from madd.pruning.groups import ChannelGroup, build_graph, is_depthwise


def _traced(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()  # tracing runs a forward pass: keep BatchNorm running statistics untouched
    try:
        device = next(model.parameters()).device
        return build_graph(model, example_input.to(device))
    finally:
        model.train(was_training)


def remove_pruned_channels(
    model: nn.Module,
    example_input: torch.Tensor,
    groups: Sequence[ChannelGroup],
    masks: Mapping[str, torch.Tensor],
) -> nn.Module:
    """Cut the channels whose mask is False out of ``model`` (in place) and return it."""
    graph = _traced(model, example_input)
    modules = dict(model.named_modules())
    for g in groups:
        keep = masks.get(g.key)
        if keep is None or bool(keep.all()):
            continue
        idxs = torch.nonzero(~keep.cpu()).flatten().tolist()
        root = next(modules[n] for n in g.producers if isinstance(modules[n], nn.Conv2d))
        if root.out_channels != keep.numel():
            raise MaddConfigError(f"mask of {g.key} has {keep.numel()} channels but the layer has {root.out_channels}")
        graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs).prune()
    return model


def conv_widths(model_or_state: nn.Module | Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, int]:
    """Output channels of every convolution, from a module or from a state dict (``<name>.weight`` rows)."""
    if isinstance(model_or_state, nn.Module):
        return {n: m.out_channels for n, m in model_or_state.named_modules() if isinstance(m, nn.Conv2d)}
    out = {}
    for key, value in model_or_state.items():
        if key.startswith(prefix) and key.endswith(".weight") and value.dim() == 4:
            out[key[len(prefix):-len(".weight")]] = int(value.shape[0])
    return out


def apply_architecture(model: nn.Module, example_input: torch.Tensor, widths: Mapping[str, int]) -> nn.Module:
    """Shrink a freshly built ``model`` (in place) so each named convolution has ``widths[name]`` outputs.

    The removed channels are the last ones; their values do not matter since a state dict is loaded
    next. Coupled layers shrink with them through the dependency graph.
    """
    current = conv_widths(model)
    todo = {n: w for n, w in widths.items() if n in current and current[n] != w}
    if not todo:
        return model
    graph = _traced(model, example_input)
    modules = dict(model.named_modules())
    for name in sorted(todo):
        conv = modules[name]
        if is_depthwise(conv):
            continue  # follows its producer's group
        have, want = conv.out_channels, todo[name]
        if have == want:
            continue  # already shrunk as part of an earlier group
        if want > have:
            raise MaddConfigError(f"checkpoint layer {name} has {want} channels, more than the model's {have}: "
                                  "the checkpoint does not belong to this model config")
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(want, have))).prune()
    left = {n: (conv_widths(model)[n], w) for n, w in todo.items() if conv_widths(model)[n] != w}
    if left:
        raise MaddConfigError(f"could not rebuild the pruned widths {left} (layer: (model, checkpoint))")
    return model
