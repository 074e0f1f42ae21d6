"""Greedy k-center coreset selection (PatchCore, Roth et al. 2022, Alg. 1) that does not stall on a CPU.

Hand-written: no maintained library selects a k-center coreset of a torch tensor (scikit-learn has none;
anomalib's ``KCenterGreedy`` is the reference it is tested against, and its per-step ``linalg.norm`` over a
freshly allocated ``N x D`` difference is the slowness users report). Here each step is one matrix-vector
product ``torch.addmv(|x|^2, X, c, alpha=-2)`` (``|x - c|^2 = |x|^2 - 2 x.c + |c|^2``) into preallocated buffers,
on features first reduced to ``projection_dim`` by a Gaussian random projection (Johnson-Lindenstrauss, as
the paper does: 128 dimensions). ``bench/bench_coreset.py`` times it against greedy on the full features.
"""

from __future__ import annotations

import math

import torch

from madd.errors import MaddConfigError


def random_projection(features: torch.Tensor, dim: int | None, generator: torch.Generator) -> torch.Tensor:
    """``features (N, D) @ R`` with ``R ~ N(0, 1/dim)`` of shape ``(D, dim)``; the features as they are when
    ``dim`` is ``None``/0 or not smaller than ``D``."""
    if not dim or dim >= features.shape[1]:
        return features
    proj = torch.randn(features.shape[1], dim, generator=generator, dtype=features.dtype) / math.sqrt(dim)
    return features @ proj.to(features.device)


@torch.no_grad()
def k_center_greedy(features: torch.Tensor, size: int, projection_dim: int | None = 128, seed: int = 0,
                    start: int | None = None) -> torch.Tensor:
    """Indices ``(size,)`` of a greedy k-center coreset of ``features (N, D)``: start at ``start`` (by default a
    point drawn with ``seed``), then repeatedly add the point farthest from every point chosen so far.
    Deterministic given ``seed``. A chosen point is never chosen again (its distance is set to ``-inf``)."""
    n = features.shape[0]
    if not 1 <= size <= n:
        raise MaddConfigError(f"coreset size {size} must be in 1..{n} (the number of patch features)")
    generator = torch.Generator().manual_seed(int(seed))
    x = random_projection(features.float(), projection_dim, generator).contiguous()
    first = int(torch.randint(n, (1,), generator=generator)) if start is None else int(start)
    sq_norms = (x * x).sum(1)
    min_dist = torch.full((n,), float("inf"), device=x.device)
    dist = torch.empty(n, device=x.device)
    chosen = torch.empty(size, dtype=torch.long)
    idx = first
    for i in range(size):
        chosen[i] = idx
        torch.addmv(sq_norms, x, x[idx], alpha=-2.0, out=dist)
        dist += sq_norms[idx]
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = float("-inf")
        idx = int(min_dist.argmax())
    return chosen
