"""CORAL (madd.losses.coral, MADD Eq. 6), shared domain-alignment loss.

Checked against hand-computed values on tiny matrices, against an independent numpy reference, and for
the properties the methods rely on (zero for identical samples, larger under shift, finite gradients).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from madd.errors import MaddConfigError
from madd.losses import CorrelationAlignmentLoss, coral_loss

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
