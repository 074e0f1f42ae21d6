"""Do transferability scores predict fine-tuned accuracy? Rank correlation of D-deepscore, LogME, H-score and the
shrunk H-score with the test accuracy after fine-tuning, over candidates pretrained on the synthetic domains and
the shared real datasets.

    python bench/bench_transferability.py                       # CPU preset: 96 px, short training (~20 min)
    python bench/bench_transferability.py --image-size 64 --pretrain-epochs 3 --finetune-epochs 5   # quicker

For every source in ``--sources`` (data config names; the real ones only where ../shared/data exists) a
supervised ResNet-18 is trained with ``madd.pipeline.train`` (stage 1); ``random:resnet18`` (no pretraining) is
added as a floor. Each candidate is then

1. scored on the target's labelled images without fine-tuning (``madd.transfer.checkpoint_ranking``: layer3
   features, a seeded 80 % of ``target_labeled`` + ``val``), and
2. fine-tuned on the target (``transfer_from=<stage-1 checkpoint>``: backbone only, fresh head), then tested.

Kendall's tau and Spearman's rho (scipy.stats) between each score and the fine-tuned test accuracy (and mAP)
are printed, with every candidate's numbers, and written to ``transferability_bench_<target>.csv`` in ``--out``.
With this few candidates the correlations are noisy; the p-values are printed for that reason.
Departures from the D-deepscore protocol, for a CPU: images at ``--image-size`` (not 224) and short training.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict
from scipy.stats import kendalltau, spearmanr

import madd.utils.resolvers  # noqa: F401
from madd.transfer.checkpoint_ranking import score_candidate, target_images
from madd.transfer.transferability import SCORES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL = {"neu_det", "x_sdd", "kolektorsdd"}


def compose_train(overrides: list[str], out: Path, data_dir: Path):
    """``conf/train.yaml`` as ``train.py`` would compose it, outputs under ``out``, no progress bar."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(out / "logs")
        cfg.paths.output_dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
        cfg.callbacks.pop("rich_progress_bar", None)
    HydraConfig().set_config(cfg)
    return cfg


def source_overrides(name: str, size: int, epochs: int) -> list[str]:
    """Stage 1 on ``name`` as a plain supervised target (its own labelled training images), CPU-sized."""
    common = [f"data={name}", "data.source=null", f"data.image_size={size}", f"trainer.max_epochs={epochs}",
              "test=false", "logger=csv"]
    if name in REAL:
        return common + ["data.label_budget.per_class=30", "data.label_budget.total=null"]
    return common + ["data.target.num_images=300", f"data.target.image_size={max(size, 64)}",
                     "data.label_budget.per_class=null", "data.label_budget.total=200"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="synthetic_awdd")
    ap.add_argument("--sources", nargs="+",
                    default=["synthetic_metal", "synthetic_bdd", "neu_det", "x_sdd", "kolektorsdd"])
    ap.add_argument("--pretrain-epochs", type=int, nargs="+", default=[5],
                    help="one candidate per source and value (more values = more candidates)")
    ap.add_argument("--finetune-epochs", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--target-images", type=int, default=400)
    ap.add_argument("--label-budget", type=int, default=50, help="labelled target images (synthetic target)")
    ap.add_argument("--label-per-class", type=int, default=10, help="labelled images per class (real target)")
    ap.add_argument("--reuse", action="store_true", help="keep stage-1 checkpoints already in --out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="output folder (default: logs/bench/transferability/<time>)")
    ap.add_argument("--data-dir", default=str(REPO / "data"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out or REPO / "logs" / "bench" / "transferability" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir)
    from madd.pipeline import train

    sources = [s for s in args.sources if (s not in REAL or SHARED.is_dir()) and s != args.target]
    skipped = sorted(set(args.sources) - set(sources))
    if skipped:
        print(f"skipped (no {SHARED}): {skipped}")
    target_over = [f"data={args.target}", "data.source=null", f"data.image_size={args.image_size}"]
    if args.target in REAL:
        target_over += [f"data.label_budget.per_class={args.label_per_class}", "data.label_budget.total=null"]
    else:
        target_over += [f"data.target.num_images={args.target_images}",
                        f"data.target.image_size={max(args.image_size, 64)}",
                        "data.label_budget.per_class=null", f"data.label_budget.total={args.label_budget}"]

    # ---------------------------------------------------------------- stage 1: candidates
    candidates: list[tuple[str, str]] = [("random:resnet18", "random:resnet18")]
    for name in sources:
        for epochs in args.pretrain_epochs:
            run = out / f"pretrain_{name}_e{epochs}"
            t = time.perf_counter()
            if args.reuse and (run / "checkpoints" / "last.ckpt").is_file():
                print(f"reusing {run}")
            else:
                train(compose_train(source_overrides(name, args.image_size, epochs), run, data_dir))
                print(f"pretrained on {name} for {epochs} epochs in {time.perf_counter() - t:.0f} s")
            candidates.append((f"{name}_e{epochs}", str(run / "checkpoints" / "last.ckpt")))

    # ---------------------------------------------------------------- scores without fine-tuning
    cfg = compose_train(target_over, out / "scoring", data_dir)
    images, labels = target_images(instantiate(cfg.data, _convert_="all"), seed=0)
    rows = []
    for label, spec in candidates:
        res = score_candidate(spec, images, labels, list(SCORES), image_size=None, seed=0)
        rows.append({"candidate": label, **res.scores})
    print(f"scored {len(candidates)} candidates on {len(labels)} target images")

    # ---------------------------------------------------------------- stage 2: fine-tune each candidate
    for row, (label, spec) in zip(rows, candidates):
        # balanced class weights: with 50 labels of a normal-dominant target, plain cross-entropy collapses to
        # "good" within a few epochs and every candidate would score the same accuracy
        over = target_over + [f"trainer.max_epochs={args.finetune_epochs}", "logger=csv",
                              "model.class_weights=balanced"]
        if not spec.startswith("random:"):
            over.append(f"transfer_from={spec}")
        t = time.perf_counter()
        metrics = train(compose_train(over, out / f"finetune_{args.target}_{label}", data_dir))
        row["test_accuracy"] = metrics.get("test/accuracy", math.nan)
        row["test_mAP"] = metrics.get("test/mAP", math.nan)
        print(f"fine-tuned {label}: accuracy {row['test_accuracy']:.3f}, mAP {row['test_mAP']:.3f} "
              f"({time.perf_counter() - t:.0f} s)")

    table = pd.DataFrame(rows)
    csv = out / f"transferability_bench_{args.target}.csv"
    table.to_csv(csv, index=False, float_format="%.6g")
    pd.set_option("display.width", 200)
    print(f"\ntarget {args.target}: {len(table)} candidates\n{table.to_string(index=False, float_format='%.4f')}")
    print("\nrank correlation with the fine-tuned result (tau/rho, p-value in brackets):")
    for metric in ("test_accuracy", "test_mAP"):
        for s in SCORES:
            values = table[s].to_numpy()
            if np.ptp(values) <= 1e-9 * max(1.0, np.abs(values).max()):
                # e.g. the plain H-score when n <= d: equal up to round-off, whose order is noise
                print(f"  {s:18s} vs {metric:13s}: constant over the candidates ({values[0]:.4f}), no ranking")
                continue
            tau, p_tau = kendalltau(table[s], table[metric])
            rho, p_rho = spearmanr(table[s], table[metric])
            print(f"  {s:18s} vs {metric:13s}: Kendall tau {tau:+.3f} ({p_tau:.2f})   "
                  f"Spearman rho {rho:+.3f} ({p_rho:.2f})")
    print(f"\nresults: {csv}")
    if np.isnan(table["test_accuracy"]).any():
        print("warning: some fine-tuning runs logged no test accuracy")


if __name__ == "__main__":
    main()
