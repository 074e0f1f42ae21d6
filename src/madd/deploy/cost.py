"""What the deployed network of a run costs (the paper's Table 5: parameters, FLOPs, FPS).

The deployed network is :func:`madd.deploy.export.deploy_model` of the module, the graph ``export.py`` writes:
images -> class probabilities (+ the anomaly map when the method has one). A MADD module holds a teacher, two
students, a decoder and a meta-learner, but inference runs student A/the teacher and the decoder only, so
``deploy_params`` counts the parameters of the submodules that the forward pass actually runs (forward hooks),
not ``module.parameters()``. FLOPs come from ``torch.utils.flop_counter`` and the latency from
``torch.utils.benchmark`` (:mod:`madd.compression.network_cost`): batch 1, CPU, one thread, so runs are comparable
across machines of the same kind; ``fps = 1000 / latency_ms``.

``train.py`` writes these into each run's ``metrics.json``. For runs made before that (or to re-measure on a quiet
machine): ``python -m madd.deploy.cost <run dir> [<run dir> ...]`` rebuilds each run from its
``checkpoints/last.ckpt`` and adds the four keys to its ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from madd.checkpoint import load_module
from madd.compression.network_cost import count_flops, measure_latency
from madd.data.dataset import input_shape
from madd.deploy.export import deploy_model
from madd.errors import MaddConfigError
from madd.reporting.run_record import METRICS_FILE


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


def record_cost(run_dir: str | Path) -> dict[str, float]:
    """Measure a finished run's deployed network and add the result to its ``metrics.json``."""
    run_dir = Path(run_dir)
    record_file = run_dir / METRICS_FILE
    if not record_file.is_file():
        raise MaddConfigError(f"{record_file} does not exist: give the folder of a run made by train.py")
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    cost = deploy_cost(module, input_shape(module.run_config.get("data")))
    record = json.loads(record_file.read_text())
    record.update(cost)
    record_file.write_text(json.dumps(record, indent=2, sort_keys=True))
    return cost


def main(run_dirs: list[str]) -> None:
    for run in run_dirs:
        cost = record_cost(run)
        print(f"{run}: {cost['deploy_params']} parameters, {cost['flops'] / 1e9:.3f} GFLOPs, "
              f"{cost['latency_ms']:.2f} ms ({cost['fps']:.1f} images/s) at batch 1", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
