"""MAPOM (meta_threshold.py): the threshold range of Eq. 14 and the meta-features."""

from __future__ import annotations

import math

import pytest
import torch

from madd.losses import coral_loss, mmd_loss
from madd.models.madd.meta_threshold import (
    META_FEATURES,
    MetaLearner,
    data_statistics,
    domain_features,
    meta_features,
)


def test_tau_range_eq14():
    meta = MetaLearner()
    z = torch.randn(1000, len(META_FEATURES)) * 100  # extreme inputs saturate the sigmoid
    tau = meta.tau(z)
    assert tau.min() >= 0.5 and tau.max() <= 0.9
    with torch.no_grad():
        meta.net[2].bias.fill_(0.0)
        meta.net[2].weight.zero_()
    assert torch.allclose(meta.tau(torch.zeros(len(META_FEATURES))), torch.tensor(0.7))  # 0.5 + 0.4 * 0.5
    assert [m.out_features for m in meta.net if isinstance(m, torch.nn.Linear)] == [64, 1]
    assert meta.net[0].in_features == 12


def test_meta_features_by_hand():
    f_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    f_t = f_s + torch.tensor([1.0, 0.0])
    conf_s, conf_t = torch.tensor([0.9, 0.8, 0.9, 0.8]), torch.tensor([0.6, 0.7, 0.6, 0.7])
    d = domain_features(f_s, f_t, conf_s, conf_t)
    tr = f_s.var(0).sum()  # same spread in both domains
    assert d[0].item() == pytest.approx(1.0 / math.sqrt(tr.item()))  # ||mu_s - mu_t|| / sqrt(tr)
    assert d[1].item() == pytest.approx(0.0, abs=1e-6)  # equal variances: log ratio 0
    mu_s, mu_t = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0])
    assert d[2].item() == pytest.approx((mu_s @ mu_t / (mu_s.norm() * mu_t.norm())).item(), abs=1e-6)
    assert d[3].item() == pytest.approx(0.0, abs=1e-6)  # a shift leaves covariances equal: CORAL 0
    assert d[4].item() == pytest.approx(mmd_loss(f_s, f_t).item(), abs=1e-6)
    assert d[5].item() == pytest.approx(0.85 - 0.65)
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    s = data_statistics(probs, torch.tensor([0.1, 0.3]), prev_tau=0.7)
    assert s.tolist() == pytest.approx([0.75, torch.tensor([0.5, 1.0]).std().item(), 0.2,
                                        torch.tensor([0.1, 0.3]).std().item(), 0.5, 0.5], abs=1e-6)
    z = meta_features(f_s, torch.stack([conf_s, 1 - conf_s], 1), f_t, probs.repeat(2, 1), torch.zeros(4), 0.7,
                      use_domain=False)
    assert z.shape == (12,) and (z[:6] == 0).all()


def test_meta_coral_feature_is_relative_eq6():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(30, 3), 2 * torch.randn(30, 3)
    d = f_s.shape[1]
    size = (torch.cov(f_s.T).pow(2).sum() + torch.cov(f_t.T).pow(2).sum()) / (4 * d * d)
    got = domain_features(f_s, f_t, torch.ones(30), torch.ones(30))[3]
    assert got.item() == pytest.approx((coral_loss(f_s, f_t) / size).item(), rel=1e-5)
    assert 0 <= got <= 2
