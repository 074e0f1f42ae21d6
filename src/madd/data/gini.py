"""Gini coefficient of class counts from the Lorenz curve (RTLAOI-DD Eqs. 16-20).

With the k category counts sorted ascending, ``m_1 <= ... <= m_k``:

    C_i = sum_{j<=i} m_j / sum_j m_j,  C_0 = 0     (Eq. 16, the normalised cumulative share)
    L(x) = piecewise-linear through (i/k, C_i)       (Eq. 17, the Lorenz curve)
    B = sum_{i=1..k} (C_i + C_{i-1}) / 2 * 1/k       (Eq. 18, trapezoids under L)
    A = 1/2 - B                                      (Eq. 19)
    delta = A / (A + B) = 1 - 2B                      (Eq. 20)

0 means perfectly balanced, values near 1 long-tailed. Eq. 16 prints the prefactor as ``1/k``; the public code
(and the Lorenz curve, which must end at 1) divides by the total count, as here.

Why hand-written: scipy/scikit-learn have no Gini of counts; the formula is three lines and tests check it
against the mean-absolute-difference form ``sum_ij |m_i - m_j| / (2 k^2 mean)`` (equal for this trapezoid rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from madd.errors import MaddConfigError


def lorenz_curve(counts: Sequence[float]) -> np.ndarray:
    """``[C_0 = 0, C_1, ..., C_k]`` of Eq. 16 for counts sorted ascending."""
    m = np.sort(np.asarray(counts, dtype=np.float64))
    if m.size == 0 or (m < 0).any() or m.sum() <= 0:
        raise MaddConfigError(
            f"the Gini coefficient needs non-negative counts with a positive total, got {list(counts)}")
    return np.concatenate([[0.0], np.cumsum(m) / m.sum()])


def gini(counts: Sequence[float]) -> float:
    """Eqs. 16-20. Zero counts are categories too (they make the distribution more unequal)."""
    c = lorenz_curve(counts)
    k = len(c) - 1
    b = float(((c[1:] + c[:-1]) / 2.0).sum() / k)  # Eq. 18
    a = 0.5 - b  # Eq. 19
    return float(max(0.0, a / (a + b)))  # Eq. 20; max() only clips float round-off below 0
