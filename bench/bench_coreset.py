"""Time of PatchCore's coreset selection on the CPU: madd's greedy k-center (random projection to 128 dimensions,
one ``addmv`` per step) against references measured in the same run on the same features:

* ``full``: the same greedy on the full-dimensional features (no projection);
* ``anomalib``: anomalib 2.7's ``KCenterGreedy`` (sparse random projection, ``linalg.norm`` per step), when
  anomalib is installed.

Each selection's coverage radius (the largest distance from a feature to its nearest coreset member, in the full
feature space, over a fixed sample of 4000 features) shows what the projection costs in quality.

    python bench/bench_coreset.py                              # 30000 patches x 384 dims (ResNet-18 stages 2+3)
    python bench/bench_coreset.py --patches 93000 --dim 384    # KolektorSDD's pool at 256 x 96 px

Features are synthetic but clustered like patch features (a mixture of ``--clusters`` Gaussians of unequal
size), so random subsampling would miss the small clusters. Use one thread on a shared machine (``--threads``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch

from madd.models.patchcore.coreset import k_center_greedy


def clustered_features(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    weights = 0.9 ** torch.arange(clusters, dtype=torch.float)
    labels = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=g)
    centers = 3.0 * torch.randn(clusters, dim, generator=g)
    return centers[labels] + 0.2 * torch.randn(n, dim, generator=g)


def coverage_radius(features: torch.Tensor, chosen: torch.Tensor, sample: torch.Tensor) -> float:
    bank = features[chosen]
    return float(max(torch.cdist(part, bank).min(1).values.max() for part in features[sample].split(500)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=30000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-anomalib", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = clustered_features(args.patches, args.dim, args.clusters, args.seed)
    size = int(args.patches * args.ratio)
    sample = torch.randperm(args.patches, generator=torch.Generator().manual_seed(1))[:4000]
    print(f"{args.patches} features x {args.dim} dims -> coreset of {size} ({args.ratio:.0%}), "
          f"{args.threads} thread(s)")
    runs = {
        f"madd (projection {args.projection_dim})": lambda: k_center_greedy(x, size, args.projection_dim, args.seed),
        "madd greedy, full dims (reference)": lambda: k_center_greedy(x, size, None, args.seed),
        "random subset (no search)": lambda: torch.randperm(args.patches, generator=torch.Generator().manual_seed(0))[:size],
    }
    if not args.skip_anomalib:
        try:
            from anomalib.models.components import KCenterGreedy

            def anomalib_run():
                torch.manual_seed(args.seed)
                with contextlib.redirect_stderr(io.StringIO()):  # its per-step progress bar
                    return torch.tensor(KCenterGreedy(x, sampling_ratio=args.ratio).select_coreset_idxs())

            runs["anomalib 2.7 KCenterGreedy (reference)"] = anomalib_run
        except ImportError:
            print("anomalib not installed: its reference is skipped")
    times = {}
    print(f"{'method':42s} {'seconds':>9s} {'x madd':>7s} {'coverage radius':>16s}")
    for name, run in runs.items():
        tic = time.perf_counter()
        chosen = run()
        times[name] = time.perf_counter() - tic
        first = next(iter(times.values()))
        print(f"{name:42s} {times[name]:9.2f} {times[name] / first:7.2f} {coverage_radius(x, chosen, sample):16.3f}",
              flush=True)


if __name__ == "__main__":
    main()
