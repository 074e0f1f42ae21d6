"""Per-image F1/IoU of U-Net encoders on KolektorSDD with the CPU preset of the backbone study.

    python bench/bench_segmentation.py [--encoders tu-tf_efficientnet_lite0,tu-tf_efficientnet_lite1] [--seeds 0,1]
                                       [--weights package] [--epochs 10] [--image-size 128,64] [--threads 2]
                                       [--out logs/bench_segmentation]
    python bench/bench_segmentation.py --encoders mobilenet_v2,resnet18 --weights null   # the from-scratch runs

Runs ``train.py -m experiment=unet_backbones_cpu data=kolektorsdd data.image_size=[H,W]`` over
encoders x seeds (``--weights``: ``package``, the ImageNet weights of the registry packages, as the preset; ``null``
for random initialisation, which encoders without packaged weights need), then the segmentation report
(``madd.reporting.segmentation``) on that multirun, and prints the backbone table, the Tukey HSD tables
and each encoder's training time relative to the first encoder's, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default="tu-tf_efficientnet_lite0,tu-tf_efficientnet_lite1")
    parser.add_argument("--weights", default="package", help="model.encoder_weights: package or null")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", default="128,64", help="H,W; multiples of 32 (KolektorSDD is tall)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "logs" / "bench_segmentation"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.loss.bce=0")
    args = parser.parse_args()

    out = Path(args.out) / time.strftime("%Y-%m-%d_%H-%M-%S")
    cmd = [
        sys.executable, str(REPO / "train.py"), "-m", "experiment=unet_backbones_cpu", "data=kolektorsdd",
        f"data.image_size=[{args.image_size}]", f"model.encoder_name={args.encoders}",
        f"model.encoder_weights={args.weights}", f"seed={args.seeds}", f"trainer.max_epochs={args.epochs}",
        f"hydra.sweep.dir={out}", "~callbacks.rich_progress_bar",
        *args.overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print("$", " ".join(cmd), flush=True)
    tic = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return done.returncode
    print(f"multirun finished in {time.perf_counter() - tic:.0f} s: {out}")

    from madd.reporting.segmentation import collect_runs, write_report

    paths = write_report(out)
    for name in ("backbones", "tukey_f1", "tukey_iou"):
        if name in paths:
            print(paths[name].read_text())
    runs = collect_runs(out)
    minutes = runs.groupby("encoder")["train_time_s"].mean()
    reference = args.encoders.split(",")[0]
    print(f"training time relative to {reference} (same run, same machine):")
    for enc in args.encoders.split(","):
        print(f"  {enc}: {minutes[enc] / minutes[reference]:.2f}x")
    print("written:", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
