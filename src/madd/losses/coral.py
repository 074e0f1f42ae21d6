"""CORAL: correlation alignment of two feature batches (Sun & Saenko 2016; MADD paper Eq. 6).

.. math::
    L_{da} = \\frac{1}{4 d^2} \\lVert C_s - C_t \\rVert_F^2,\\qquad
    C = \\frac{1}{n-1} (X - \\bar X)^\\top (X - \\bar X)

with ``d`` the feature dimension and unbiased (``n - 1``) covariances, exactly as the paper writes it.
Transfer-Learning-Library's ``CorrelationAlignmentLoss`` differs: it adds the squared difference of the means
and averages the squared covariance difference over the ``d^2`` entries instead of dividing by ``4 d^2``, so its
values are not comparable with ours (a factor 4 on the covariance term, plus the mean term).
"""

from __future__ import annotations

import torch
from torch import nn

from madd.errors import MaddConfigError


def _check_features(f_s: torch.Tensor, f_t: torch.Tensor) -> None:
    if f_s.ndim != 2 or f_t.ndim != 2:
        raise ValueError(f"CORAL takes (n, d) feature batches; got shapes {tuple(f_s.shape)} and {tuple(f_t.shape)}")
    if f_s.shape[1] != f_t.shape[1]:
        raise ValueError(f"CORAL: feature dimensions differ ({f_s.shape[1]} vs {f_t.shape[1]})")
    if min(len(f_s), len(f_t)) < 2:
        raise MaddConfigError(
            f"CORAL needs at least 2 samples per domain for a covariance, got {len(f_s)} source and {len(f_t)} "
            "target samples; raise data.batch_size / data.source_batch_size / data.unlabeled_batch_size to >= 2"
        )


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """``||Cov(f_s) - Cov(f_t)||_F^2 / (4 d^2)`` for ``f_s`` ``(n_s, d)`` and ``f_t`` ``(n_t, d)`` (Eq. 6).

    The two batches may have different sizes; covariances are unbiased. Returns a scalar tensor.
    """
    _check_features(f_s, f_t)
    d = f_s.shape[1]
    # torch.cov wants variables in rows; correction=1 gives the unbiased (n - 1) estimate
    c_s = torch.cov(f_s.T, correction=1).reshape(d, d)
    c_t = torch.cov(f_t.T, correction=1).reshape(d, d)
    return (c_s - c_t).pow(2).sum() / (4 * d * d)


class CorrelationAlignmentLoss(nn.Module):
    """CORAL loss (MADD Eq. 6): :math:`\\frac{1}{4 d^2} \\lVert C_s - C_t \\rVert_F^2` with unbiased covariances.

    Inputs: source features ``(n_s, d)``, target features ``(n_t, d)``. Output: a scalar.
    """

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return coral_loss(f_s, f_t)
