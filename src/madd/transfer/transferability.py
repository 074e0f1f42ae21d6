"""Transferability scores: how well a frozen feature extractor's features fit the target labels, no fine-tuning.

Each score takes features ``F`` (n x d) and integer labels ``y`` (n,) and returns a float; higher = expected to
transfer better. All are computed in float64 NumPy.

* :func:`d_deepscore` -- D-deepscore (Fu et al., ESWA 2025) *as its public code computes it* (papers/NOTES.md):
  ``G`` = every row of ``F`` replaced by its class mean; ``F`` and ``G`` are each rotated onto their own
  principal axes (SVD of the uncentred matrix); covariances ``X^T X / (n - 1)`` without centring;
  ``score = tr(pinv(cov F) cov G)``. As both covariances are then diagonal this is
  ``sum_i s_i(G)^2 / s_i(F)^2`` over singular values sorted descending (about C non-zero terms): the H-score
  without centring and with that per-matrix rotation (which pairs F's i-th axis with G's i-th axis whatever
  their directions -- a property of the public code we keep, not a derivation).
* :func:`h_score` -- H-score (Bao et al., ICIP 2019): ``tr(cov(F)^+ cov(E[F|y]))`` with centred covariances and
  ``pinv(rcond=1e-15)``, as in the Transfer-Learning-Library reference.
* :func:`h_score_shrinkage` -- the regularised H-score (Ibrahim et al., NeurIPS 2021 "Newer is not always
  better"): ``tr(cov_a(F)^+ (1 - a) cov(E[F|y]))`` with the Ledoit-Wolf shrunk covariance ``cov_a`` (scikit-learn)
  and its shrinkage ``a``. With fewer images than feature dimensions (the small-sample case: n < 256) the plain
  H-score degenerates to ``C - 1`` for every candidate; the shrunk one does not.
* :func:`logme` -- LogME (You et al., ICML 2021), the fixed-point evidence maximisation of the reference code
  (thuml/LogME ``_fit_fixed_point``, from "Ranking and Tuning Pre-trained Models", arXiv 2110.10545): for each
  class's one-hot column ``y_c``, maximise the Bayesian linear-regression evidence over the prior precision
  alpha and the noise precision beta; the score is the mean over classes of the maximised evidence / n.

Why hand-written: none of these is in a maintained pip package we depend on (thuml/LogME and the
Transfer-Learning-Library are research repositories, not libraries); the tests cross-check LogME against a
direct numerical maximisation of the evidence and D-deepscore against its singular-value form.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from madd.errors import MaddConfigError

PINV_RCOND = 1e-15  # numpy's pinv default, as the reference implementations use


def _check(features, labels) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.ndim != 1 or len(f) != len(y):
        raise MaddConfigError(f"features must be (n, d) and labels (n,), got {f.shape} and {y.shape}")
    if len(f) < 2:
        raise MaddConfigError(f"a transferability score needs at least 2 labelled images, got {len(f)}")
    if not np.isfinite(f).all():
        raise MaddConfigError("features contain NaN/inf: the checkpoint's backbone produced non-finite outputs")
    _, y = np.unique(y, return_inverse=True)  # contiguous 0..C-1
    return f, y.astype(np.int64)


def class_mean_matrix(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``G``: each row of ``F`` replaced by the mean feature of its class (``E[f | y]`` per sample)."""
    f, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return g


def _principal_rotation(x: np.ndarray) -> np.ndarray:
    """``X`` in the basis of its own right singular vectors (uncentred): columns ordered by singular value."""
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt.T


def d_deepscore(features, labels) -> float:
    """D-deepscore of the public code (see module docstring); higher = better transfer."""
    f, y = _check(features, labels)
    n = len(f)
    g = class_mean_matrix(f, y)
    fr, gr = _principal_rotation(f), _principal_rotation(g)
    cov_f = fr.T @ fr / (n - 1)
    cov_g = gr.T @ gr / (n - 1)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=PINV_RCOND) @ cov_g))


def h_score(features, labels) -> float:
    """H-score (Bao et al. 2019): ``tr(pinv(cov f) cov(E[f|y]))``, centred covariances."""
    f, y = _check(features, labels)
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(class_mean_matrix(f, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(np.atleast_2d(cov_f), rcond=PINV_RCOND) @ np.atleast_2d(cov_g)))


def h_score_shrinkage(features, labels) -> float:
    """Regularised H-score with the Ledoit-Wolf covariance (sklearn) of the centred features."""
    from sklearn.covariance import LedoitWolf

    f, y = _check(features, labels)
    f = f - f.mean(0, keepdims=True)
    lw = LedoitWolf(assume_centered=False, store_precision=False).fit(f)  # its pinvh is not needed
    cov_g = np.cov(class_mean_matrix(f, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(lw.covariance_, rcond=PINV_RCOND) @ ((1.0 - lw.shrinkage_) * cov_g)))


def logme_evidence(sigma: np.ndarray, x2: np.ndarray, res_x2: float, n: int, d: int, alpha: float,
                   beta: float) -> tuple[float, float, float]:
    """Log evidence / n of Bayesian linear regression at (alpha, beta), in the SVD basis of ``F``.

    With ``F = U S V^T``, ``sigma = s^2``, ``x = U^T y``: ``m2 = ||m||^2``, ``res2 = ||F m - y||^2`` and
    ``L = d/2 log a + n/2 log b - 1/2 sum log(a + b sigma) - b/2 res2 - a/2 m2 - n/2 log 2pi``.
    Returns ``(L / n, m2, res2)``.
    """
    t = alpha / beta
    m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
    res2 = float((x2 / (1.0 + sigma / t) ** 2).sum() + res_x2)
    ev = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
          - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
    return float(ev / n), m2, res2


def logme(features, labels, max_iter: int = 11, tol: float = 1e-3) -> float:
    """LogME (fixed-point version of the reference code); higher = better transfer."""
    f, y = _check(features, labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > 1e-10 * max(1.0, s.max())  # the reference keeps singular values > 1e-10 (rank of F)
    u, sigma = u[:, keep], s[keep] ** 2
    evidences = []
    for c in range(int(y.max()) + 1):
        yc = (y == c).astype(np.float64)
        x = u.T @ yc
        x2 = x**2
        res_x2 = float((yc**2).sum() - x2.sum())  # the part of y outside F's column space
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            _, m2, res2 = logme_evidence(sigma, x2, res_x2, n, d, alpha, beta)
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= tol:
                break
        evidences.append(logme_evidence(sigma, x2, res_x2, n, d, alpha, beta)[0])
    return float(np.mean(evidences))


SCORES: dict[str, Callable[..., float]] = {"d_deepscore": d_deepscore, "logme": logme, "h_score": h_score,
                                          "h_score_shrinkage": h_score_shrinkage}


def score_features(name: str, features, labels) -> float:
    if name not in SCORES:
        raise MaddConfigError(f"unknown transferability score {name!r}; choose from {sorted(SCORES)}")
    return SCORES[name](features, labels)
