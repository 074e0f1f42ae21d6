"""MAPOM's meta-learner (section 2.7, Eq. 14) and its 12 input features ``z``.

``z`` describes the current target data as the teacher sees it, against the source domain:

=====  ================== =====================================================================================
 #     name               definition (``f``: pooled adapter features of the teacher; ``c``: teacher confidence)
=====  ================== =====================================================================================
 1     ``mean_diff``      ``||mu_s - mu_t|| / sqrt((tr Sigma_s + tr Sigma_t) / 2)``: scale-free mean difference
 2     ``var_log_ratio``  ``log(tr Sigma_t / tr Sigma_s)``: variance ratio (log, so 0 = equal spread)
 3     ``cosine``         ``cos(mu_s, mu_t)``: feature similarity of the domain means
 4     ``coral``          Eq. 6 CORAL distance relative to the covariances' own size,
                          ``||C_s - C_t||_F^2 / (||C_s||_F^2 + ||C_t||_F^2)`` in [0, 2]
 5     ``mmd``            Eq. 8 multi-kernel Gaussian MMD^2 (median-heuristic bandwidths) in [0, 2]
 6     ``conf_gap``       ``mean c_source - mean c_target``: teacher-source confidence gap
 7     ``conf_mean``      mean teacher confidence on the target images
 8     ``conf_std``       its standard deviation
 9     ``rec_mean``       mean per-image reconstruction error (Eq. 10's L1, student A's decoder)
 10    ``rec_std``        standard deviation of the per-image reconstruction error (its variance, as a std)
 11    ``entropy``        mean prediction entropy of the teacher, divided by ``log K`` (in [0, 1])
 12    ``accept_rate``    share of target confidences >= the previous step's threshold
=====  ================== =====================================================================================

Rows 1-6 are the domain-difference features, 7-12 the data statistics. Every feature is scale-free and of
order one, so the MLP needs no input normaliser. With ``domain_features=False`` rows 1-6 are zero (the
paper's Table 7 "remove domain difference feature input").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from madd.losses import coral_loss, mmd_loss

META_FEATURES = ("mean_diff", "var_log_ratio", "cosine", "coral", "mmd", "conf_gap",
                 "conf_mean", "conf_std", "rec_mean", "rec_std", "entropy", "accept_rate")
TAU_MIN, TAU_RANGE = 0.5, 0.4  # Eq. 14: tau in [0.5, 0.9]


def _std(x: torch.Tensor) -> torch.Tensor:
    return x.std() if x.numel() > 1 else x.new_zeros(())


@torch.no_grad()
def domain_features(f_src: torch.Tensor, f_tgt: torch.Tensor, conf_src: torch.Tensor,
                    conf_tgt: torch.Tensor) -> torch.Tensor:
    """Rows 1-6 of the table above, ``(6,)``. Needs at least 2 samples per domain."""
    f_src, f_tgt = f_src.float(), f_tgt.float()
    eps = 1e-8
    mu_s, mu_t = f_src.mean(0), f_tgt.mean(0)
    tr_s, tr_t = f_src.var(0).sum(), f_tgt.var(0).sum()
    mean_diff = (mu_s - mu_t).norm() / ((tr_s + tr_t) / 2 + eps).sqrt()
    var_log_ratio = torch.log((tr_t + eps) / (tr_s + eps))
    cosine = torch.nn.functional.cosine_similarity(mu_s, mu_t, dim=0)
    d = f_src.shape[1]
    cov_size = (torch.cov(f_src.T).pow(2).sum() + torch.cov(f_tgt.T).pow(2).sum()) / (4 * d * d)
    coral = coral_loss(f_src, f_tgt) / (cov_size + eps)
    mmd = mmd_loss(f_src, f_tgt)
    gap = conf_src.float().mean() - conf_tgt.float().mean()
    return torch.stack([mean_diff, var_log_ratio, cosine, coral, mmd, gap])


@torch.no_grad()
def data_statistics(probs_tgt: torch.Tensor, rec_error: torch.Tensor, prev_tau: float | torch.Tensor) -> torch.Tensor:
    """Rows 7-12 of the table above, ``(6,)``: from the teacher's class probabilities ``(N, K)`` on the
    target images and their per-image reconstruction errors ``(N,)``."""
    probs_tgt = probs_tgt.float()
    conf = probs_tgt.max(1).values
    k = probs_tgt.shape[1]
    entropy = -(probs_tgt * probs_tgt.clamp_min(1e-12).log()).sum(1) / math.log(k)
    rec = rec_error.float()
    accept = (conf >= torch.as_tensor(prev_tau, device=conf.device, dtype=conf.dtype)).float()
    return torch.stack([conf.mean(), _std(conf), rec.mean(), _std(rec), entropy.mean(), accept.mean()])


def meta_features(f_src: torch.Tensor, probs_src: torch.Tensor, f_tgt: torch.Tensor, probs_tgt: torch.Tensor,
                  rec_error: torch.Tensor, prev_tau: float | torch.Tensor, use_domain: bool = True) -> torch.Tensor:
    """The 12-dimensional ``z`` (domain-difference features, then data statistics)."""
    stats = data_statistics(probs_tgt, rec_error, prev_tau)
    if use_domain and len(f_src) > 1 and len(f_tgt) > 1:
        dom = domain_features(f_src, f_tgt, probs_src.max(1).values, probs_tgt.max(1).values)
    else:
        dom = stats.new_zeros(6)
    return torch.cat([dom.to(stats), stats])


class MetaLearner(nn.Module):
    """``g_phi``: a two-layer MLP 12 -> 64 -> 1 (section 2.7), and Eq. 14's threshold
    ``tau = 0.5 + 0.4 · sigmoid(g_phi(z))`` in [0.5, 0.9]."""

    def __init__(self, in_features: int = len(META_FEATURES), hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``g_phi(z)``: ``(..., 12) -> (...)``."""
        return self.net(z).squeeze(-1)

    def tau(self, z: torch.Tensor) -> torch.Tensor:
        """Eq. 14."""
        return TAU_MIN + TAU_RANGE * torch.sigmoid(self(z))
