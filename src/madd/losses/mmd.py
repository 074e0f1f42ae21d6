"""Multi-kernel Gaussian maximum mean discrepancy (Gretton et al. 2012; MADD paper Eq. 8).

Eq. 8 is the squared distance between the kernel mean embeddings of two samples,

.. math::
    \\mathrm{MMD}^2 = \\Big\\lVert \\frac{1}{n}\\sum_i \\phi(x_i) - \\frac{1}{m}\\sum_j \\phi(y_j) \\Big\\rVert^2
    = \\overline{K_{xx}} + \\overline{K_{yy}} - 2\\,\\overline{K_{xy}},

which, expanded with the kernel trick, is the **biased** (V-statistic) estimator: the means run over all
pairs, diagonal included. It is never negative and is exactly zero when the two samples coincide. The
**unbiased** U-statistic (diagonals of ``K_xx`` and ``K_yy`` left out) is available with ``unbiased=True``;
it can be slightly negative.

Kernel: the equal-weight mixture of Gaussians :math:`k(a, b) = \\frac{1}{M}\\sum_{m} \\exp(-\\lVert a-b
\\rVert^2 / (2\\sigma_m^2))`. By default :math:`\\sigma_m = c_m\\,\\sigma_{med}` with multipliers
:math:`c_m \\in \\{1/4, 1/2, 1, 2, 4\\}` and :math:`\\sigma_{med}` the median heuristic: the square root of
the median squared Euclidean distance between distinct points of the pooled sample ``x ∪ y``, computed
without gradient (the bandwidth is a statistic of the batch, not something to optimise).

Hand-written: torchmetrics' only MMD lives inside KID (polynomial kernel on Inception features) and POT has no
MMD; the multi-kernel Gaussian form here is what DAN/Transfer-Learning-Library use, with the bandwidth stated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` as ``(n, m)``, without the square root (``torch.cdist`` then squaring gives NaN
    gradients where two points coincide, which is exactly the case of identical samples)."""
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return d2.clamp_min(0.0)


@torch.no_grad()
def median_bandwidth(z: torch.Tensor) -> torch.Tensor:
    """Median heuristic: ``sqrt(median_{i<j} ||z_i - z_j||^2)`` over the rows of ``z`` (a scalar tensor)."""
    n = len(z)
    iu = torch.triu_indices(n, n, offset=1, device=z.device)
    d2 = squared_distances(z, z)[iu[0], iu[1]]
    # torch.median returns the lower middle value for an even count; fine for a heuristic
    return d2.median().clamp_min(torch.finfo(z.dtype).eps).sqrt()


def mmd_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: Sequence[float] | None = None,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    unbiased: bool = False,
) -> torch.Tensor:
    """Squared multi-kernel MMD between samples ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (Eq. 8).

    Args:
        bandwidths: explicit Gaussian widths ``sigma_m``; ``None`` = median heuristic times ``multipliers``.
        multipliers: factors on the median bandwidth (default ``1/4, 1/2, 1, 2, 4``).
        unbiased: U-statistic instead of the default biased V-statistic (Eq. 8 as written).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"MMD takes (n, d) and (m, d) feature batches; got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m = len(x), len(y)
    if min(n, m) < 1:
        raise ValueError(f"MMD needs at least 1 sample per side, got {n} and {m}")
    if unbiased and min(n, m) < 2:
        raise ValueError(f"the unbiased MMD estimator needs at least 2 samples per side, got {n} and {m}")
    z = torch.cat([x, y])
    if bandwidths is None:
        sigmas = median_bandwidth(z) * torch.tensor(multipliers, dtype=z.dtype, device=z.device)
    else:
        sigmas = torch.as_tensor(bandwidths, dtype=z.dtype, device=z.device)
    d2 = squared_distances(z, z)
    kernel = torch.exp(-d2.unsqueeze(0) / (2.0 * sigmas.view(-1, 1, 1) ** 2)).mean(0)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    if not unbiased:
        return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()
    off_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    off_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_xx + off_yy - 2.0 * k_xy.mean()


class MultiKernelMMDLoss(nn.Module):
    """Squared multi-kernel Gaussian MMD (MADD Eq. 8):
    :math:`\\overline{K_{xx}} + \\overline{K_{yy}} - 2\\overline{K_{xy}}` with
    :math:`K = \\frac{1}{M}\\sum_m \\exp(-\\lVert a-b\\rVert^2/(2\\sigma_m^2))`, biased estimator by default,
    :math:`\\sigma_m` = median pairwise distance times ``(1/4, 1/2, 1, 2, 4)`` unless ``bandwidths`` is given.

    Inputs: ``x`` ``(n, d)``, ``y`` ``(m, d)``. Output: a scalar.
    """

    def __init__(
        self,
        bandwidths: Sequence[float] | None = None,
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        unbiased: bool = False,
    ) -> None:
        super().__init__()
        self.bandwidths = None if bandwidths is None else tuple(float(b) for b in bandwidths)
        self.multipliers = tuple(float(c) for c in multipliers)
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mmd_loss(x, y, self.bandwidths, self.multipliers, self.unbiased)

    def extra_repr(self) -> str:
        return f"bandwidths={self.bandwidths}, multipliers={self.multipliers}, unbiased={self.unbiased}"
