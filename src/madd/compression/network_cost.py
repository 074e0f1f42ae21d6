"""Model cost: parameters, FLOPs/MACs (counted by libraries) and measured CPU latency and throughput.

* ``flops``: ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs);
* ``macs``: torch-pruning's ``count_ops_and_params`` (multiply-accumulates). This is what the
  pruned-ResNet paper's Table III and most pruning papers call "FLOPs" (ResNet-18 at 224x224: 1.8e9);
* latency: ``torch.utils.benchmark.Timer.blocked_autorange`` (warm-up, then the median of timed blocks)
  in ``torch.inference_mode``, on the CPU, with a fixed thread count so runs are comparable.

FLOPs are not latency (NOTES.md): both are reported.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _cpu_eval_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).cpu().eval()


def count_flops(net: nn.Module, image: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``image`` (a batch; usually batch 1)."""
    net = _cpu_eval_copy(net)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(image.cpu())
    return int(counter.get_total_flops())


def count_macs(net: nn.Module, image: torch.Tensor) -> int:
    macs, _ = tp.utils.count_ops_and_params(_cpu_eval_copy(net), image.cpu())
    return int(macs)


def measure_latency(
    net: nn.Module,
    image_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    min_run_time: float = 0.5,
) -> dict[int, float]:
    """Median CPU seconds per forward pass for each batch size (inputs of shape ``(b, *image_shape)``)."""
    net = _cpu_eval_copy(net)

    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode():
            net(x)

    out = {}
    for b in batch_sizes:
        x = torch.rand(int(b), *image_shape)
        forward(x)  # first call allocates; blocked_autorange warms up as well
        timer = benchmark.Timer(stmt="forward(x)", globals={"forward": forward, "x": x}, num_threads=threads)
        out[int(b)] = float(timer.blocked_autorange(min_run_time=min_run_time).median)
    return out


def measure(
    net: nn.Module,
    image_shape: Sequence[int],
    latency: bool = True,
    batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    min_run_time: float = 0.5,
) -> dict[str, float]:
    """Flat dict: ``params``, ``macs``, ``flops`` and, with ``latency``, ``latency_b<b>_ms`` / ``throughput_b<b>``."""
    image = torch.rand(1, *image_shape)
    row: dict[str, float] = {"params": count_params(net), "macs": count_macs(net, image), "flops": count_flops(net, image)}
    if latency:
        for b, sec in measure_latency(net, image_shape, batch_sizes, threads, min_run_time).items():
            row[f"latency_b{b}_ms"] = sec * 1e3
            row[f"throughput_b{b}"] = b / sec  # images per second
    return row
