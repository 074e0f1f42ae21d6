"""Multi-kernel MMD (madd.losses.mmd, MADD Eq. 8), shared domain-alignment loss.

Checked against hand-computed values on tiny matrices, against an independent numpy/scipy reference, and for
the properties the methods rely on (zero for identical samples, larger under shift, finite gradients).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from madd.losses import (
    DEFAULT_MULTIPLIERS,
    MultiKernelMMDLoss,
    median_bandwidth,
    mmd_loss,
)

# ----------------------------------------------------------------------------------------------- references


def mmd_numpy(x: np.ndarray, y: np.ndarray, multipliers=DEFAULT_MULTIPLIERS, unbiased=False) -> float:
    z = np.concatenate([x, y])
    d2 = np.sort(pdist(z, "sqeuclidean"))
    sigma = math.sqrt(d2[(len(d2) - 1) // 2])  # lower median, as documented
    def k(a, b):
        dd = cdist(a, b, "sqeuclidean")
        return np.mean([np.exp(-dd / (2 * (c * sigma) ** 2)) for c in multipliers], axis=0)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if unbiased:
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


# ----------------------------------------------------------------------------------------------- MMD


def test_mmd_hand_computed_explicit_bandwidth():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]])
    e = math.exp
    kxx = (2 + 2 * e(-0.5)) / 4
    kyy = (2 + 2 * e(-0.5)) / 4
    kxy = (e(-4.5) + e(-8.0) + e(-2.0) + e(-4.5)) / 4
    assert mmd_loss(x, y, bandwidths=[1.0]).item() == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-6)
    unbiased = e(-0.5) + e(-0.5) - 2 * kxy
    assert mmd_loss(x, y, bandwidths=[1.0], unbiased=True).item() == pytest.approx(unbiased, rel=1e-6)


def test_mmd_hand_computed_median_heuristic():
    # one pair at squared distance 1 -> sigma_med = 1; biased MMD^2 = 2 - 2 mean_c exp(-1 / (2 c^2))
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    assert median_bandwidth(torch.cat([x, y])).item() == pytest.approx(1.0)
    expected = 2 - 2 * sum(math.exp(-1 / (2 * c * c)) for c in DEFAULT_MULTIPLIERS) / len(DEFAULT_MULTIPLIERS)
    assert mmd_loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert MultiKernelMMDLoss()(x, y).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_numpy_reference(unbiased):
    g = np.random.default_rng(2)
    x, y = g.normal(size=(9, 4)), g.normal(loc=0.7, size=(6, 4))
    got = mmd_loss(torch.tensor(x), torch.tensor(y), unbiased=unbiased).item()
    assert got == pytest.approx(mmd_numpy(x, y, unbiased=unbiased), rel=1e-9, abs=1e-12)


def test_mmd_zero_for_identical_larger_for_shifted():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, generator=g)
    same_dist = torch.randn(64, 8, generator=g)
    assert mmd_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    near = mmd_loss(x, same_dist).item()
    far = mmd_loss(x, same_dist + 1.5).item()
    assert 0 <= near < far and far > 5 * near
    assert abs(mmd_loss(x, same_dist, unbiased=True).item()) < mmd_loss(x, same_dist + 1.5, unbiased=True).item()


def test_mmd_gradients_finite_even_for_coincident_points():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 16, generator=g).requires_grad_(True)
    mmd_loss(x, x.detach().clone()).backward()  # zero distances on the cross diagonal
    assert torch.isfinite(x.grad).all()
    x.grad = None
    y = torch.randn(30, 16, generator=g) + 1.0
    mmd_loss(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_mmd_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        mmd_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        mmd_loss(torch.zeros(1, 3), torch.zeros(4, 3), unbiased=True)
