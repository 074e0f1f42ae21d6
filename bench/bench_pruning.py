"""Benchmark: ResNet-18 after 3 rounds of 30% L1 filter pruning vs the unpruned network, measured in one run.

    python bench/bench_pruning.py                      # CPU-sized: ~30 min on 1 thread of a busy 2-core machine
    python bench/bench_pruning.py --images 600 --epochs 15 --finetune-epochs 3 --batch-size 32   # ~6 min

1. trains ResNet-18 from scratch on the balanced binary synthetic weld set (``data=synthetic_awdd_binary``) and runs
   3 rounds of 30% L1 filter pruning with fine-tuning (``L1FilterPruning``, ``--scope``), through ``train.py``'s
   pipeline; accuracy/mAP/DR/FAR of every stage are measured on the test split;
2. measures the unpruned architecture and the physically pruned one (``pruned.ckpt``) in this process,
   alternating, ``--repeats`` times each (the best median is kept): parameters, MACs, FLOPs, CPU latency and
   throughput at batch 1 and 32 at 224x224 (the paper's resolution) and at the training resolution;
3. prints the table and the issue's targets: FLOPs <= 25%, CPU latency at batch 1 <= 45%, accuracy drop <= 1 point.
   A missed target is reported as missed.

The same cost for the block-internal scope (``inner``, the reference re-implementation of Li et al.) is printed for
comparison (architecture only: which filters are removed does not change the cost).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def compose(args, out: Path):
    from helpers import compose_config  # the same composition as train.py (tests/helpers)

    overrides = [
        "data=synthetic_awdd_binary", "model=supervised", "model/optimizer=adam", "model/scheduler=step",
        "callbacks=[default,l1_pruning]", "logger=csv",
        f"data.target.num_images={args.images}", f"data.target.image_size={args.size}", f"data.image_size={args.size}",
        "data.splits={train: 0.6, val: 0.1, test: 0.3}", f"data.batch_size={args.batch_size}", f"seed={args.seed}",
        "model.augment=weak", f"model.scheduler.step_size={max(1, 2 * args.epochs // 3)}",
        f"trainer.max_epochs={args.epochs + 3 * args.finetune_epochs}",
        "callbacks.l1_pruning.rate=0.3", "callbacks.l1_pruning.rounds=3",
        f"callbacks.l1_pruning.finetune_epochs={args.finetune_epochs}", f"callbacks.l1_pruning.scope={args.scope}",
        "callbacks.l1_pruning.eval_split=test", f"callbacks.l1_pruning.latency_threads={args.threads}",
        f"callbacks.l1_pruning.finetune_lr_factor={args.finetune_lr_factor}",
    ]
    return compose_config(overrides, out, Path(args.data_dir))


def best_cost(nets: dict, image_shape, threads: int, repeats: int, min_run_time: float) -> dict[str, dict]:
    """``measure`` of every net, alternating between them ``repeats`` times; the lowest latency is kept."""
    from madd.compression.network_cost import measure

    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, net in nets.items():
            row = measure(net, image_shape, True, (1, 32), threads, min_run_time)
            if name not in best:
                best[name] = row
            else:
                for key in row:
                    if key.startswith("latency"):
                        best[name][key] = min(best[name][key], row[key])
                        b = key.split("_")[1][1:]
                        best[name][f"throughput_b{b}"] = int(b) / (best[name][key] / 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30, help="training epochs before round 1")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--finetune-lr-factor", type=float, default=0.1, help="fine-tuning LR / initial LR")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scope", default="all", choices=["inner", "all"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from madd.checkpoint import load_module
    from madd.pruning.groups import find_groups
    from madd.compression.masks import compute_masks
    from madd.pruning.physical import remove_pruned_channels
    from madd.models.backbones import Backbone
    from madd.models.classifier import ImageClassifier
    from madd.pipeline import train

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_pruning_"))
    tic = time.perf_counter()
    train(compose(args, out))
    train_s = time.perf_counter() - tic
    report = pd.read_csv(out / "out" / "pruning" / "report.csv")

    pruned = load_module(out / "out" / "pruning" / "pruned.ckpt").net
    base = ImageClassifier(Backbone("resnet18"), 2).eval()  # the unpruned architecture (cost only)
    other = "inner" if args.scope == "all" else "all"
    probe = torch.rand(1, 3, args.size, args.size)
    groups = find_groups(base, probe, other)
    masks = None
    for _ in range(3):
        masks = compute_masks(base, groups, 0.3, previous=masks)
    other_net = remove_pruned_channels(copy.deepcopy(base), probe, groups, masks)

    rows = []
    for size in (224, args.size):
        cost = best_cost({"unpruned": base, f"3x30% {args.scope}": pruned, f"3x30% {other}": other_net},
                         (3, size, size), args.threads, args.repeats, args.min_run_time)
        for name, row in cost.items():
            rows.append({"input": f"{size}x{size}", "model": name, **row})
    table = pd.DataFrame(rows)
    for col in ("params", "macs", "flops", "latency_b1_ms", "latency_b32_ms"):
        table[f"{col}_ratio"] = table[col] / table.groupby("input")[col].transform("first")

    pd.set_option("display.width", 200)
    print(f"\n== cost (CPU, {args.threads} thread(s), best median of {args.repeats} alternating runs) ==")
    print(table[["input", "model", "params", "macs", "flops_ratio", "latency_b1_ms", "latency_b1_ms_ratio",
                 "throughput_b1", "latency_b32_ms", "latency_b32_ms_ratio", "throughput_b32"]].to_string(index=False))
    print(f"\n== accuracy on the test split ({args.images} images x 0.3; 1 image = "
          f"{100 / round(args.images * 0.3):.2f} points), L1 rounds with scope={args.scope} ==")
    print(report[["stage", "kept_channels", "params", "flops_ratio", "accuracy", "accuracy_change", "mAP", "DR",
                  "FAR"]].to_string(index=False))

    at224 = table[(table["input"] == "224x224") & (table["model"] == f"3x30% {args.scope}")].iloc[0]
    drop = -float(report["accuracy_change"].iloc[-1])
    checks = [
        ("FLOPs <= 25% of baseline", at224["flops_ratio"], at224["flops_ratio"] <= 0.25),
        ("CPU latency at batch 1 (224x224) <= 45%", at224["latency_b1_ms_ratio"], at224["latency_b1_ms_ratio"] <= 0.45),
        ("accuracy drop <= 1 point", drop, drop <= 1.0),
    ]
    print("\n== targets ==")
    for name, value, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'}  {name}: {value:.3f}")
    print(f"\ntraining + pruning wall time: {train_s:.0f} s; run folder: {out}")


if __name__ == "__main__":
    main()
