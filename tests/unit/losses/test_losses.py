"""Shared domain-alignment losses (madd.losses): CORAL (MADD Eq. 6) and multi-kernel MMD (MADD Eq. 8).

Checked against hand-computed values on tiny matrices, against independent numpy/scipy references, and for
the properties the methods rely on (zero for identical samples, larger under shift, finite gradients).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from madd.errors import MaddConfigError
from madd.losses import (
    DEFAULT_MULTIPLIERS,
    CorrelationAlignmentLoss,
    MultiKernelMMDLoss,
    coral_loss,
    median_bandwidth,
    mmd_loss,
)

# ----------------------------------------------------------------------------------------------- references


def coral_numpy(f_s: np.ndarray, f_t: np.ndarray) -> float:
    d = f_s.shape[1]
    diff = np.cov(f_s, rowvar=False, ddof=1) - np.cov(f_t, rowvar=False, ddof=1)
    return float(np.sum(diff**2) / (4 * d * d))


def coral_tllib_style(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Transfer-Learning-Library's variant (mean term, covariance term averaged over d^2), for the scale note."""
    ms, mt = f_s.mean(0, keepdim=True), f_t.mean(0, keepdim=True)
    cs = (f_s - ms).T @ (f_s - ms) / (len(f_s) - 1)
    ct = (f_t - mt).T @ (f_t - mt) / (len(f_t) - 1)
    return (ms - mt).pow(2).mean() + (cs - ct).pow(2).mean()


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


# ----------------------------------------------------------------------------------------------- CORAL


def test_coral_hand_computed():
    # C_s = diag(4/3, 4/3); C_t = [[.5, .5], [.5, .5]]; ||C_s - C_t||_F^2 = 2(5/6)^2 + 2(1/2)^2 = 17/9; / (4*2^2)
    f_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    f_t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert coral_loss(f_s, f_t).item() == pytest.approx(17 / 144, rel=1e-6)
    assert CorrelationAlignmentLoss()(f_s, f_t).item() == pytest.approx(17 / 144, rel=1e-6)


def test_coral_matches_numpy_reference():
    g = np.random.default_rng(0)
    f_s, f_t = g.normal(size=(7, 5)), 2.0 * g.normal(size=(11, 5)) + 1.0
    got = coral_loss(torch.tensor(f_s), torch.tensor(f_t)).item()
    assert got == pytest.approx(coral_numpy(f_s, f_t), rel=1e-10)


def test_coral_scale_differs_from_transfer_learning_library():
    # equal means: TLL's value is the covariance term averaged over d^2, i.e. 4 times the paper's Eq. 6
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(16, 4, generator=g), 3 * torch.randn(16, 4, generator=g)
    f_s, f_t = f_s - f_s.mean(0), f_t - f_t.mean(0)
    assert coral_tllib_style(f_s, f_t).item() == pytest.approx(4 * coral_loss(f_s, f_t).item(), rel=1e-5)


def test_coral_properties_and_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    assert coral_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert coral_loss(x, x + 5.0).item() == pytest.approx(0.0, abs=1e-5)  # second order only: blind to a shift
    assert coral_loss(x, 3.0 * x).item() > 0.1
    f_s = x.clone().requires_grad_(True)
    coral_loss(f_s, x).backward()  # identical inputs: the gradient is zero, and must be finite
    assert torch.isfinite(f_s.grad).all()
    f_s.grad = None
    coral_loss(f_s, 2 * x).backward()
    assert torch.isfinite(f_s.grad).all() and f_s.grad.abs().sum() > 0


def test_coral_rejects_bad_shapes():
    with pytest.raises(MaddConfigError, match="batch_size"):
        coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="dimensions differ"):
        coral_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        coral_loss(torch.zeros(4, 3, 2), torch.zeros(4, 3, 2))


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
