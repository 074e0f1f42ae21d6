"""What the deployed network of a run costs (the paper's Table 5: parameters, FLOPs, FPS).

The deployed network is :func:`madd.deploy.export.deploy_model` of the module, the graph ``export.py`` writes:
images -> class probabilities (+ the anomaly map when the method has one). A MADD module holds a teacher, two
students, a decoder and a meta-learner, but inference runs student A/the teacher and the decoder only, so
``deploy_params`` counts the parameters of the submodules that the forward pass actually runs (forward hooks),
not ``module.parameters()``. FLOPs come from ``torch.utils.flop_counter`` and the latency from
``torch.utils.benchmark`` (:mod:`madd.compression.measure`): batch 1, CPU, one thread, so runs are comparable
across machines of the same kind; ``fps = 1000 / latency_ms``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from madd.compression.measure import count_flops, measure_latency
from madd.deploy.export import deploy_model


def used_parameter_count(net: nn.Module, image: torch.Tensor) -> int:
    """Parameters of the submodules that run in ``net(image)`` (shared parameters counted once)."""
    ran: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, *_: ran.append(mod)) for m in net.modules()]
    try:
        with torch.inference_mode():
            net(image)
    finally:
        for h in handles:
            h.remove()
    params = {id(p): p.numel() for m in ran for p in m.parameters(recurse=False)}
    return int(sum(params.values()))


def deploy_cost(module: nn.Module, shape: Sequence[int], min_run_time: float = 0.2) -> dict[str, float]:
    """``deploy_params``, ``flops``, ``latency_ms`` and ``fps`` of ``module``'s deployed network, input ``(C, H, W)``."""
    net = deploy_model(copy.deepcopy(module).cpu().eval(), shape)
    image = torch.rand(1, *shape)
    latency_s = measure_latency(net, shape, batch_sizes=(1,), threads=1, min_run_time=min_run_time)[1]
    return {"deploy_params": used_parameter_count(net, image), "flops": count_flops(net, image),
            "latency_ms": 1000 * latency_s, "fps": 1.0 / latency_s}
