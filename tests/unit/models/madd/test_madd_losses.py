"""MADD's loss terms (Eqs. 7, 8, 10, 12, 13, 16, 17) and the loss-weight rule, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from madd.losses import coral_loss
from madd.models.madd import config_sections
from madd.models.madd.callbacks import adjust_weights
from madd.models.madd.loss import (
    AttentionWeightedPseudoLabelLoss,
    DomainAlignmentLoss,
    FeatureConsistencyLoss,
    MADDTotalLoss,
    MemoryConsistencyLoss,
    MetaF1Loss,
    PredictionConsistencyLoss,
    ReconstructionLoss,
)


def test_prediction_consistency_eq7_by_hand():
    a = torch.tensor([[0.0, 0.0]])  # p_A = (0.5, 0.5)
    b = torch.tensor([[math.log(3.0), 0.0]])  # p_B = (0.75, 0.25)
    assert PredictionConsistencyLoss()(a, b).item() == pytest.approx((0.25**2 + 0.25**2) / 2)
    assert PredictionConsistencyLoss()(b, b).item() == 0


def test_feature_consistency_eq8_single_gaussian_by_hand():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [3.0]])
    k = lambda d2: math.exp(-d2 / 2.0)  # noqa: E731  sigma = 1
    kxx = (1 + k(1) + k(1) + 1) / 4
    kyy = (1 + k(9) + k(9) + 1) / 4
    kxy = (1 + k(9) + k(1) + k(4)) / 4
    got = FeatureConsistencyLoss(bandwidths=[1.0])(x, y).item()
    assert got == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-6)
    assert FeatureConsistencyLoss()(x, x).item() == pytest.approx(0.0, abs=1e-7)


def test_domain_alignment_is_the_shared_eq6_coral():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(8, 3), torch.randn(6, 3)
    c_s, c_t = torch.cov(f_s.T), torch.cov(f_t.T)
    assert DomainAlignmentLoss()(f_s, f_t).item() == pytest.approx(((c_s - c_t) ** 2).sum().item() / (4 * 9))
    assert DomainAlignmentLoss()(f_s, f_t).item() == pytest.approx(coral_loss(f_s, f_t).item())


def test_reconstruction_loss_eq10_counts_normal_images_only():
    rec = torch.zeros(3, 1, 2, 2)
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.2, 0.9, 0.4)])
    loss = ReconstructionLoss()(rec, x, torch.tensor([True, False, True]))
    assert loss.item() == pytest.approx((0.2 + 0.4) / 2)
    none = ReconstructionLoss()(rec.requires_grad_(), x, torch.tensor([False, False, False]))
    assert none.item() == 0 and none.requires_grad  # graph kept (DDP needs every parameter used)
    grey = ReconstructionLoss()(torch.zeros(1, 3, 2, 2), torch.full((1, 1, 2, 2), 0.5), torch.tensor([True]))
    assert grey.item() == pytest.approx(0.5)


def test_attention_weighted_pseudo_label_loss_eq12_by_hand():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    pseudo = torch.tensor([1, 0, 0])
    keep = torch.tensor([True, True, False])
    attention = torch.stack([torch.full((1, 2, 2), 0.5), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.ones(1, 2, 2)])
    ce0, ce1 = math.log(2), math.log(1 + math.exp(-2))
    expected = (0.5 * ce0 + 0.25 * ce1) / 3  # mean(A) weights, divided by all 3 unlabelled images
    loss = AttentionWeightedPseudoLabelLoss()(logits, pseudo, keep, attention)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0  # rejected pseudo-label: no gradient
    unweighted = AttentionWeightedPseudoLabelLoss()(logits, pseudo, keep, None)  # RCSM off
    assert unweighted.item() == pytest.approx((ce0 + ce1) / 3)


def test_normalised_attention_weights_keep_the_scale_of_a_plain_pseudo_label_loss():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    pseudo, keep = torch.tensor([1, 0, 0]), torch.tensor([True, True, False])
    ce0, ce1 = math.log(2), math.log(1 + math.exp(-2))
    attention = torch.stack([torch.full((1, 2, 2), 0.5), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.ones(1, 2, 2)])
    # mean(A) over the kept images = (0.5 + 0.25) / 2: the weights become 0.5 / 0.375 and 0.25 / 0.375
    loss = AttentionWeightedPseudoLabelLoss(normalise_attention=True)(logits, pseudo, keep, attention)
    assert loss.item() == pytest.approx((0.5 / 0.375 * ce0 + 0.25 / 0.375 * ce1) / 3)
    flat = torch.full((3, 1, 2, 2), 0.1)  # a uniform map weighs nothing: the plain loss, not a tenth of it
    plain = AttentionWeightedPseudoLabelLoss(normalise_attention=True)(logits, pseudo, keep, flat)
    assert plain.item() == pytest.approx((ce0 + ce1) / 3)
    nothing_kept = AttentionWeightedPseudoLabelLoss(normalise_attention=True)(logits, pseudo, keep & False, attention)
    assert nothing_kept.item() == 0


def test_memory_consistency_eq16_by_hand():
    f = torch.tensor([[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]], requires_grad=True)
    means = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    loss = MemoryConsistencyLoss()(f, means, torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(((1 + 4) / 2 + (1 + 1) / 2) / 2)
    loss.backward()
    assert f.grad[2].abs().sum() == 0


def test_meta_f1_surrogate_eq13_by_hand_and_gradient_direction():
    conf = torch.tensor([0.95, 0.9, 0.6, 0.55])
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0])
    tau = torch.tensor(0.75, requires_grad=True)
    t = 0.05
    a = torch.sigmoid((conf - 0.75) / t)
    tp, fp, fn = (a * correct).sum(), (a * (1 - correct)).sum(), ((1 - a) * correct).sum()
    loss = MetaF1Loss(temperature=t)(conf, correct, tau)
    assert loss.item() == pytest.approx((1 - 2 * tp / (2 * tp + fp + fn)).item(), abs=1e-6)
    assert loss.item() < 0.05  # this threshold separates right from wrong pseudo-labels: F1 ~ 1
    # a threshold that lets the wrong ones in is worse, and the gradient pushes it up
    low = torch.tensor(0.5, requires_grad=True)
    loss_low = MetaF1Loss(t)(conf, correct, low)
    assert loss_low.item() > loss.item()
    loss_low.backward()
    assert low.grad < 0
    # the hard-indicator F1 the surrogate approximates (Eq. 13 as written) at tau = 0.75 is exactly 1
    hard = (conf > 0.75).float()
    assert (2 * (hard * correct).sum() / (2 * (hard * correct).sum() + (hard * (1 - correct)).sum()
                                           + ((1 - hard) * correct).sum())).item() == 1.0


def test_meta_f1_fallback_without_correct_predictions_raises_tau():
    conf = torch.tensor([0.9, 0.8])
    tau = torch.tensor(0.7, requires_grad=True)
    loss = MetaF1Loss(0.05)(conf, torch.zeros(2), tau)
    assert loss.item() == pytest.approx(torch.sigmoid((conf - 0.7) / 0.05).mean().item())
    loss.backward()
    assert tau.grad < 0  # minimising the acceptance raises tau


PAPER_WEIGHTS = {"alpha": 0.3, "beta": 0.25, "gamma": 0.2, "delta": 0.15, "epsilon": 0.05, "zeta": 0.03, "eta": 0.02}


def test_default_loss_weights_are_the_papers():
    """Eq. 17's weights have one home, conf/model/madd.yaml's loss_weights: the paper's values."""
    assert config_sections.defaults("loss_weights") == PAPER_WEIGHTS
    assert config_sections.resolve("loss_weights", None) == PAPER_WEIGHTS


def test_total_loss_eq17_weighting():
    values = {"ce": 1.0, "ssl": 2.0, "cons_p": 3.0, "cons_f": 4.0, "rec": 5.0, "da": 6.0, "mem": 7.0, "meta": 8.0}
    terms = {k: torch.tensor(v) for k, v in values.items()}
    w = config_sections.resolve("loss_weights", None)
    expected = (0.3 * 1 + 0.25 * 2 + 0.2 * (3 + 4) + 0.15 * 5 + 0.05 * 6 + 0.03 * 7 + 0.02 * 8)
    assert MADDTotalLoss()(terms, w).item() == pytest.approx(expected)
    assert w == {"alpha": 0.3, "beta": 0.25, "gamma": 0.2, "delta": 0.15, "epsilon": 0.05, "zeta": 0.03, "eta": 0.02}
    partial = {"ce": torch.tensor(1.0), "cons_p": torch.tensor(2.0)}  # switched-off terms are absent
    assert MADDTotalLoss()(partial, w).item() == pytest.approx(0.3 + 0.2 * 2)
    with pytest.raises(KeyError, match="unknown"):
        MADDTotalLoss()({"bogus": torch.tensor(1.0)}, w)


def test_loss_weight_rule_is_bounded_and_symmetric():
    w = config_sections.resolve("loss_weights", None)
    up = adjust_weights(w, delta=0.05, step=0.1)
    assert up["alpha"] == pytest.approx(0.27) and up["beta"] == pytest.approx(0.275)
    assert up["gamma"] == pytest.approx(0.22) and up["delta"] == pytest.approx(0.165)
    assert up["epsilon"] == pytest.approx(0.055)
    assert up["zeta"] == 0.03 and up["eta"] == 0.02  # not adjusted
    down = adjust_weights(w, delta=-0.05, step=0.1)
    assert down["alpha"] == pytest.approx(0.33) and down["beta"] == pytest.approx(0.225)
    assert down["epsilon"] == pytest.approx(0.05)  # 0.045 clipped to the lower bound
    assert adjust_weights(w, delta=0.001, tolerance=0.005) == w  # within tolerance: unchanged
    many = dict(w)
    for _ in range(100):
        many = adjust_weights(many, delta=1.0, step=0.5)
    assert many["alpha"] == pytest.approx(0.05) and many["beta"] == pytest.approx(0.5)
    off = adjust_weights({**w, "gamma": 0.0}, delta=1.0)
    assert off["gamma"] == 0.0  # a switched-off term stays off
