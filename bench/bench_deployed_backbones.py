"""Benchmark: the deployed MADD detector on EfficientNet-Lite0 against today's ResNet-18 one, and peak training memory.

    python bench/bench_deployed_backbones.py                          # 224 px, 1 thread, 5 interleaved repeats
    python bench/bench_deployed_backbones.py --repeats 7 --train-steps 10   # the run in docs/compression.md
    python bench/bench_deployed_backbones.py --threads 2 --repeats 9 --skip-train

1. builds MADD twice from the presets, composed as ``train.py`` composes them (``experiment=madd_awdd
   data.image_size=<size>``): ``model/backbone=efficientnet_lite0`` (ImageNet weights from the registry package)
   and ``model/backbone=resnet18 model.backbone.weights=null model.rcsm.decoder_widths=[128,64,32]`` (the
   ResNet-18 MADD as the issue measured it);
2. measures each deployed graph, :func:`madd.deploy.export.deploy_model` (what ``export.py`` writes and
   :mod:`madd.deploy.cost` measures: student A + adapter + head -> class probabilities, and the RCSM mask ->
   student A up to ``rcsm.decoder_stage`` -> reconstruction decoder -> anomaly map): parameters of the modules that
   run, FLOPs (``torch.utils.flop_counter``, split into the classification pass, the decoder and the rest of the
   map path), and CPU batch-1 latency (``torch.utils.benchmark``, same thread count for all) of the graph and of its
   classification pass alone (student A), the four alternating ``--repeats`` times, the order reversed every other
   repeat; the median of the repeats is kept, throughput = 1 / latency, and the throughput ratio is the median of
   the per-repeat ratios (the graphs of one repeat run back to back);
3. runs ``train.py experiment=madd_awdd`` with each backbone, shortened by overrides (``--train-steps`` steps per
   stage, a few validation batches, no test; everything else as the preset) in a subprocess and reads its peak
   resident set (``ru_maxrss`` of that child from ``os.wait4``; the data loaders run in the main process,
   ``num_workers: 0``);
4. prints the table, the ratios against ResNet-18 and the issue's targets (Lite0 at most 6 M parameters and
   1.5 GFLOPs, throughput at least 2x ResNet-18's, training under 4 GB); a missed target is printed as missed,
   with by how much.

The ratio, not the absolute latency, is the result: the machine is shared, and both graphs are slowed alike.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

BACKBONES = {  # name -> the overrides of the preset that select it
    "EfficientNet-Lite0": ["model/backbone=efficientnet_lite0"],
    # the reference is the ResNet-18 MADD the issue measured: its decoder widths then, whatever the preset's now
    "ResNet-18": ["model/backbone=resnet18", "model.backbone.weights=null", "model.rcsm.decoder_widths=[128,64,32]"],
}
REFERENCE = "ResNet-18"
TARGET_PARAMS, TARGET_GFLOPS, TARGET_SPEEDUP, TARGET_TRAIN_GB = 6e6, 1.5, 2.0, 4.0


def build_madd(overrides: list[str], size: int, data_dir: Path):
    """The MADD module of ``experiment=madd_awdd`` with ``overrides``, at ``size`` px (nothing is trained)."""
    from hydra.utils import instantiate

    from helpers import compose_config  # the composition train.py does (tests/helpers)

    cfg = compose_config(["experiment=madd_awdd", f"data.image_size={size}", *overrides],
                         Path(tempfile.mkdtemp()), data_dir)
    return instantiate(cfg.model, _convert_="partial").eval()


def flops_by_part(module, net, image: torch.Tensor) -> dict[str, int]:
    """FLOPs of the deployed graph ``net``: total, the classification pass, the decoder, the rest of the map."""
    from torch.utils.flop_counter import FlopCounterMode

    from madd.compression.network_cost import count_flops

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(image)
    counts = counter.get_flop_counts()
    decoder = sum(sum(ops.values()) for name, ops in counts.items() if name.endswith(".decoder"))
    # the decoder's layers with FLOPs: its transposed convolutions (up.0, up.3, up.6) and the output convolution
    layers = {name.split(".decoder.")[1]: int(sum(ops.values())) for name, ops in counts.items()
              if re.search(r"\.decoder\.(up\.\d+|out)$", name)}
    total = int(counter.get_total_flops())
    classify = count_flops(module.model.eval_net, image)
    return {"flops": total, "classify": classify, "decoder": int(decoder), "map_rest": total - classify - decoder,
            "decoder_layers": layers}


def graph_cost(module, size: int) -> dict[str, float]:
    from madd.compression.network_cost import count_params
    from madd.deploy.cost import used_parameter_count
    from madd.deploy.export import deploy_model

    shape = (3, size, size)
    net = deploy_model(module, shape)
    image = torch.rand(1, *shape)
    row = {"params": used_parameter_count(net, image), "classify_params": used_parameter_count(module.model.eval_net, image),
           "decoder_params": count_params(module.model.decoder), "has_map": float(net.has_map),
           "decoder_input": (module.model.decoder_stage,
                             module.student_a.backbone.stage_channels[module.model.decoder_stage])}
    row.update(flops_by_part(module, net, image))
    return {**row, "net": net}


def interleaved_latency(nets: dict, shape, threads: int, repeats: int, min_run_time: float) -> dict[str, list[float]]:
    """Batch-1 CPU seconds per image of every net, the nets alternating ``repeats`` times (the order reversed every
    other repeat, so that none always runs first)."""
    from madd.compression.network_cost import measure_latency

    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(repeats):
        for name in (list(nets) if r % 2 == 0 else list(nets)[::-1]):
            times[name].append(measure_latency(nets[name], shape, (1,), threads, min_run_time)[1])
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {1e3 * t[-1]:.1f} ms" for n, t in times.items()),
              file=sys.stderr, flush=True)
    return times


def training_peak_memory(overrides: list[str], steps: int, threads: int, data_dir: Path,
                         out: Path) -> tuple[float, float]:
    """Peak resident set (GB) and wall time (s) of ``train.py experiment=madd_awdd`` cut to ``steps`` steps."""
    cmd = [
        sys.executable, str(REPO / "train.py"), "experiment=madd_awdd", *overrides,
        "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "++trainer.limit_val_batches=2",
        "++trainer.check_val_every_n_epoch=1", "test=false",  # training memory: fit (TIM stages + joint) only
        "model.tim.stage1.max_epochs=1", f"model.tim.stage1.limit_train_batches={steps}",
        "model.tim.stage2.max_epochs=1", f"model.tim.stage2.limit_train_batches={steps}",
        f"paths.data_dir={data_dir}", f"hydra.run.dir={out}", "logger=csv", "~callbacks.rich_progress_bar",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    print("$ python train.py", " ".join(cmd[2:]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with open(out / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (not the maximum over all children)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed ({proc.returncode}):\n{(out / 'stderr.txt').read_text()[-4000:]}")
    return usage.ru_maxrss * 1024 / 1e9, wall  # Linux: ru_maxrss in kilobytes


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"MISSED ({miss})"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed runs per repeat and graph")
    p.add_argument("--train-steps", type=int, default=3, help="training steps per stage of the memory runs")
    p.add_argument("--skip-train", action="store_true", help="deployed graphs only")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)

    rows, nets = {}, {}
    for name, overrides in BACKBONES.items():
        module = build_madd(overrides, args.size, data_dir)
        row = graph_cost(module, args.size)
        nets[name] = row.pop("net")
        nets[f"{name} classification"] = module.model.eval_net  # the same student A, without the anomaly-map path
        rows[name] = row
    times = interleaved_latency(nets, (3, args.size, args.size), args.threads, args.repeats, args.min_run_time)
    lite_name = next(n for n in BACKBONES if n != REFERENCE)
    # the graphs of one repeat ran back to back: their ratio is what a load change between repeats moves least
    speedup = {part: [r / x for r, x in zip(times[REFERENCE + part], times[lite_name + part])]
               for part in ("", " classification")}
    for name, row in rows.items():
        row["latency_ms"] = 1e3 * statistics.median(times[name])
        row["classify_ms"] = 1e3 * statistics.median(times[f"{name} classification"])

    ref = rows[REFERENCE]
    print(f"deployed MADD detector (class + anomaly map), {args.size}x{args.size}, batch 1, CPU, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved repeats")
    print("| backbone | params (M) | of which decoder | GFLOPs | classification pass | decoder | rest of map path "
          "| latency (ms) | images/s | classification pass alone (ms) | params vs R18 | FLOPs vs R18 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['params'] / 1e6:.2f} | {r['decoder_params'] / 1e6:.2f} | {r['flops'] / 1e9:.2f} "
              f"| {r['classify'] / 1e9:.2f} | {r['decoder'] / 1e9:.2f} | {r['map_rest'] / 1e9:.2f} "
              f"| {r['latency_ms']:.1f} | {1e3 / r['latency_ms']:.1f} | {r['classify_ms']:.1f} "
              f"| {r['params'] / ref['params']:.2f}x | {r['flops'] / ref['flops']:.2f}x |")
    for part, label in (("", "deployed graph"), (" classification", "classification pass alone")):
        print(f"throughput {lite_name} / {REFERENCE}, {label}, per repeat: "
              + ", ".join(f"{v:.2f}" for v in speedup[part]) + f"; median {statistics.median(speedup[part]):.2f}x")
    lite = rows[lite_name]
    paired = statistics.median(speedup[""])
    for name, r in rows.items():
        print(f"decoder FLOPs by layer, {name} (reads stage {r['decoder_input'][0]}, "
              f"{r['decoder_input'][1]} channels): "
              + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in r["decoder_layers"].items()))
    print(f"targets (issue 14), {lite_name}:")
    print(f"  parameters <= 6 M: {lite['params'] / 1e6:.2f} M, "
          + verdict(lite["params"] <= TARGET_PARAMS, f"{(lite['params'] - TARGET_PARAMS) / 1e6:+.2f} M"))
    print(f"  FLOPs <= 1.5 G: {lite['flops'] / 1e9:.2f} G, " + verdict(
        lite["flops"] / 1e9 <= TARGET_GFLOPS, f"{lite['flops'] / 1e9 - TARGET_GFLOPS:+.2f} G; the decoder "
        f"{lite['decoder'] / 1e9:.2f} G and the rest of the map path (mask, second backbone pass up to the decoder's "
        f"stage) {lite['map_rest'] / 1e9:.2f} G"))
    print(f"  throughput >= 2x {REFERENCE}: {paired:.2f}x (median of the per-repeat ratios), "
          + verdict(paired >= TARGET_SPEEDUP, f"{paired - TARGET_SPEEDUP:+.2f}x"))

    if args.skip_train:
        return
    for name, overrides in BACKBONES.items():
        with tempfile.TemporaryDirectory() as tmp:
            peak_gb, wall = training_peak_memory(overrides, args.train_steps, args.threads, data_dir, Path(tmp) / "run")
        target = "" if name == REFERENCE else "; target < 4 GB: " + verdict(peak_gb < TARGET_TRAIN_GB,
                                                                          f"{peak_gb - TARGET_TRAIN_GB:+.2f} GB")
        print(f"peak training memory (resident set, ru_maxrss) of that run ({name}, {args.train_steps} steps per "
              f"stage): {peak_gb:.2f} GB in {wall:.0f} s{target}")


if __name__ == "__main__":
    main()
