"""MADD's building blocks against hand-computed values: the adapter (Eq. 5), the decoder (Eq. 9), the RCSM masks
(20-30 % rule) and attention map (Eq. 11), the memory bank (FIFO, Eqs. 15-16, purification), the meta-learner
(Eq. 14) and its input features, and the industrial views."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from madd.errors import MaddConfigError
from madd.losses import coral_loss, mmd_loss
from madd.models.backbones import Backbone
from madd.models.madd.loss import AttentionWeightedPseudoLabelLoss
from madd.models.madd.mapom import META_FEATURES, MetaLearner, data_statistics, domain_features, meta_features
from madd.models.madd.memory_bank import MemoryBank
from madd.models.madd.rcsm import (
    DefectGuidedMasker,
    DefectPrototype,
    anomaly_attention,
    boxes_to_mask,
    defect_cells,
    masked_input,
)
from madd.models.madd.networks import DomainAdaptiveAdapter, MADDNet, ReconstructionDecoder, _split_stride
from madd.models.madd.views import MODALITIES, RandomCTArtifacts, build_mild_view, build_strong_view


# ------------------------------------------------------------------------------------------- Eq. 5 adapter


def test_adapter_matches_eq5_by_hand():
    torch.manual_seed(0)
    daa = DomainAdaptiveAdapter(4, reduction=2, zero_init=False)
    f = torch.randn(3, 4)
    w1, b1, w2, b2 = daa.fc1.weight, daa.fc1.bias, daa.fc2.weight, daa.fc2.bias
    inner = w2 @ torch.relu(w1 @ f.T + b1[:, None]) + b2[:, None] + f.T  # W2 ReLU(W1 f + b1) + b2 + f
    mu, var = inner.mean(0, keepdim=True), inner.var(0, unbiased=False, keepdim=True)
    expected = ((inner - mu) / torch.sqrt(var + daa.norm.eps)).T  # LayerNorm (weight 1, bias 0 at init)
    assert torch.allclose(daa(f), expected, atol=1e-5)


def test_adapter_on_maps_is_per_location_and_zero_init_is_layernorm():
    torch.manual_seed(0)
    daa = DomainAdaptiveAdapter(8, reduction=4, zero_init=False)
    fmap = torch.randn(2, 8, 3, 5)
    out = daa(fmap)
    assert out.shape == fmap.shape
    assert torch.allclose(out[1, :, 2, 4], daa(fmap[1, :, 2, 4].unsqueeze(0))[0], atol=1e-6)
    fresh = DomainAdaptiveAdapter(8)  # W2 = 0, b2 = 0: DAA(f) = LayerNorm(f)
    assert torch.allclose(fresh(fmap), F.layer_norm(fmap.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2), atol=1e-6)


def test_madd_net_outputs_and_ablation_without_adapter():
    net = MADDNet(Backbone("resnet18"), num_classes=3)
    out = net.forward_features(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 3) and out.features.shape == (2, 512)
    assert [s.shape[-1] for s in out.stages] == [16, 8, 4, 2]
    assert net.forward_until(torch.rand(2, 3, 64, 64), 1).shape == (2, 128, 8, 8)
    plain = MADDNet(Backbone("resnet18"), num_classes=3, adapter=False)
    assert not any(k.startswith("adapter.") for k in plain.state_dict())


# ------------------------------------------------------------------------------------------- Eq. 9 decoder


@pytest.mark.parametrize("stride,expected", [(32, [4, 4, 2]), (16, [4, 2, 2]), (8, [2, 2, 2]), (4, [2, 2, 1])])
def test_decoder_stride_split(stride, expected):
    assert _split_stride(stride) == expected
    assert math.prod(expected) == stride


@pytest.mark.parametrize("stride,feat,size", [(16, (6, 6), (96, 96)), (32, (3, 3), (96, 96)), (8, (32, 12), (256, 96)),
                                              (16, (4, 4), (70, 70))])
def test_decoder_has_3_transposed_convs_1_conv_and_returns_input_size(stride, feat, size):
    dec = ReconstructionDecoder(256, stride)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    tconvs = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(tconvs) == 3 and len(convs) == 1
    out = dec(torch.randn(2, 256, *feat), size)
    assert out.shape == (2, 3, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_decoder_widths_are_configurable_and_checked():
    wide = ReconstructionDecoder(112, 16, widths=(128, 64, 32))
    assert [m.out_channels for m in wide.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [128, 64, 32]
    assert wide(torch.randn(1, 112, 4, 4), (64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(MaddConfigError, match="model.rcsm.decoder_widths"):
        ReconstructionDecoder(112, 16, widths=(32, 16))


# ------------------------------------------------------------------------------------------- RCSM masks, Eq. 11


def test_mask_ratio_stays_in_20_30_percent_for_any_similarity():
    torch.manual_seed(0)
    masker = DefectGuidedMasker((0.2, 0.3), sim_threshold=0.5, key_fraction=0.1)
    images = torch.rand(6, 3, 96, 96)
    feats = torch.randn(6, 16, 12, 12)
    for proto in (None, torch.randn(16), feats[0, :, 0, 0]):
        for thr in (-1.0, 0.5, 2.0):  # everything / some / nothing above the similarity threshold
            masker.sim_threshold = thr
            mask = masker(feats, proto, images)
            assert mask.shape == (6, 1, 96, 96)
            ratio = mask.flatten(1).mean(1)
            assert ((ratio >= 0.2) & (ratio <= 0.3)).all(), ratio
            assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_mask_covers_cells_similar_to_the_defect_prototype():
    # 10x10 grid; the prototype direction appears in exactly 25 cells: those (and only those) are masked
    feats = torch.zeros(1, 4, 10, 10)
    feats[:, 1] = 1.0  # background direction
    feats[0, :, 2:7, 3:8] = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1, 1)  # defect-like patch (25 cells)
    proto = torch.tensor([1.0, 0.0, 0.0, 0.0])
    images = torch.full((1, 1, 40, 40), 0.5)  # flat: no key structure
    mask = DefectGuidedMasker((0.2, 0.3), 0.5, key_fraction=0.0)(feats, proto, images)
    cells = F.adaptive_max_pool2d(mask, (10, 10))[0, 0]
    expected = torch.zeros(10, 10)
    expected[2:7, 3:8] = 1
    assert torch.equal(cells, expected)


def test_prototype_not_ready_is_ignored_inside_the_graph():
    """``prototype_ready`` (the prototype's `initialized` buffer) picks the branch as a tensor, so an exported graph
    keeps it: false = no prototype, true = the prototype."""
    torch.manual_seed(0)
    masker = DefectGuidedMasker((0.2, 0.3), sim_threshold=0.5, key_fraction=0.1)
    feats, images, proto = torch.randn(3, 16, 12, 12), torch.rand(3, 3, 48, 48), torch.randn(16)
    with_proto, without = masker(feats, proto, images), masker(feats, None, images)
    assert not torch.equal(with_proto, without)  # the prototype changes the mask here
    assert torch.equal(masker(feats, proto, images, torch.tensor(False)), without)
    assert torch.equal(masker(feats, proto, images, torch.tensor(True)), with_proto)


def test_key_structural_regions_are_masked():
    images = torch.zeros(1, 1, 40, 40)
    images[..., :, 20:] = 1.0  # one vertical edge at x = 20
    key = DefectGuidedMasker.key_scores(images, (10, 10))[0]
    assert key[:, 4:6].min() > key[:, :3].max()  # edge cells score highest
    mask = DefectGuidedMasker((0.2, 0.3), sim_threshold=2.0, key_fraction=0.2)(torch.zeros(1, 4, 10, 10), None, images)
    cells = F.adaptive_max_pool2d(mask, (10, 10))[0, 0]
    assert cells[:, 4:6].sum() == 20  # the 20 edge cells are R_key and masked


def test_masked_input_zeroes_masked_pixels():
    x = torch.rand(1, 3, 4, 4)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2, :] = 1
    y = masked_input(x, m)
    assert (y[..., :2, :] == 0).all() and torch.equal(y[..., 2:, :], x[..., 2:, :])


def test_attention_map_eq11_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    rec = torch.tensor([0.0, 0.3, 0.6, 1.2]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    a, e = anomaly_attention(rec, x, eps=1e-6)
    assert torch.allclose(e.flatten(), torch.tensor([0.0, 0.3, 0.6, 1.2]))
    assert torch.allclose(a.flatten(), torch.tensor([0.0, 0.3, 0.6, 1.2]) / (1.2 + 1e-6))
    assert a.max() < 1 and a.min() >= 0
    a2, _ = anomaly_attention(torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8))  # grey target vs 3-channel recon
    assert torch.allclose(a2.flatten(1).amax(1), torch.ones(3), atol=1e-4)  # per-image normalisation


def test_defect_cells_from_masks_boxes_and_labels():
    labels = torch.tensor([0, 1, 1, 2])  # normal, defect with mask, defect with a box, defect w/o localisation
    masks = torch.zeros(4, 1, 8, 8)
    masks[1, 0, 0:2, 0:2] = 1
    boxes = [torch.zeros(0, 5), torch.zeros(0, 5), torch.tensor([[1.0, 4, 4, 8, 8]]), torch.zeros(0, 5)]
    cells = defect_cells(labels, masks, (4, 4), normal_index=0, boxes=boxes)
    assert cells[0].sum() == 0
    assert cells[1].sum() == 1 and cells[1, 0, 0]
    assert cells[2].sum() == 4 and cells[2, 2:, 2:].all()
    assert cells[3].all()
    assert boxes_to_mask(boxes, (8, 8))[2].sum() == 16


def test_prototype_is_the_ema_of_defect_feature_means():
    proto = DefectPrototype(2, momentum=0.5)
    feats = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).reshape(1, 2, 1, 2)  # cell 0 = (1, 5), cell 1 = (3, 7)
    s, n = DefectPrototype.batch_sum(feats, torch.tensor([[[True, False]]]))
    proto.update(s, n)
    assert torch.allclose(proto.prototype, torch.tensor([1.0, 5.0])) and bool(proto.initialized)
    s, n = DefectPrototype.batch_sum(feats, torch.tensor([[[False, True]]]))
    proto.update(s, n)
    assert torch.allclose(proto.prototype, torch.tensor([2.0, 6.0]))  # 0.5 * (1, 5) + 0.5 * (3, 7)
    proto.update(torch.zeros(2), torch.tensor(0.0))  # no defect cell: unchanged
    assert torch.allclose(proto.prototype, torch.tensor([2.0, 6.0]))


# ------------------------------------------------------------------------------------------- memory bank


def test_bank_fifo_order_and_capacity():
    bank = MemoryBank(dim=2, num_classes=2, capacity=3)
    for i in range(5):
        bank.add(torch.tensor([[float(i), 0.0]]), torch.tensor([i % 2]), torch.tensor([i]))
    # capacity 3: samples 0 and 1 (the oldest) were overwritten in order
    assert sorted(bank.sample_index.tolist()) == [2, 3, 4]
    assert len(bank) == 3 and int(bank.num_added) == 5
    assert int(bank.ptr) == 5 % 3  # the next write replaces the oldest (sample 2, in slot 2)
    bank.add(torch.tensor([[9.0, 0.0]]), torch.tensor([1]), torch.tensor([5]))
    assert sorted(bank.sample_index.tolist()) == [3, 4, 5]
    assert bank.class_counts().tolist() == [1, 2]
    big = MemoryBank(dim=1, num_classes=1, capacity=2)
    big.add(torch.arange(5.0).view(5, 1), torch.zeros(5, dtype=torch.long))  # more rows than capacity
    assert sorted(big.features.flatten().tolist()) == [3.0, 4.0] and int(big.num_added) == 5


def test_bank_similarity_eq15_and_class_mean_eq16_by_hand():
    bank = MemoryBank(dim=2, num_classes=2, capacity=10, min_count=2)
    bank.add(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]), torch.tensor([0, 0, 1]))
    new = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    sim, judged = bank.similarity(new, torch.tensor([0, 1]))
    # class 0: mean(cos((1,1),(1,0)), cos((1,1),(0,2))) = 1/sqrt(2); class 1 has 1 < min_count entries
    assert sim[0].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert judged.tolist() == [True, False]
    means, has = bank.class_means(torch.tensor([0, 1, 0]))
    assert torch.allclose(means, torch.tensor([[0.5, 1.0], [3.0, 3.0], [0.5, 1.0]]))
    assert has.all()
    empty = MemoryBank(dim=2, num_classes=3, capacity=4)
    assert not empty.class_means(torch.tensor([2]))[1].any()


def test_bank_purification_domain_adaptive_and_plain():
    torch.manual_seed(0)
    members = F.normalize(torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(20, 2), dim=1)  # a tight class 0
    da = MemoryBank(dim=2, num_classes=2, capacity=50, kind="domain_adaptive", kappa=1.0, min_count=5)
    da.add(members, torch.zeros(20, dtype=torch.long))
    theta = da.thresholds()
    normed = F.normalize(members, dim=1)
    cos = normed @ normed.T
    loo = (cos.sum(1) - 1.0) / 19
    assert theta[0].item() == pytest.approx((loo.mean() - loo.std()).item(), abs=1e-5)
    assert theta[1].item() == -1.0  # empty class: no threshold (cold start passes)
    keep, _ = da.purify(torch.tensor([[1.0, 0.02], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    assert keep.tolist() == [True, False, True]  # typical kept, atypical dropped, unjudged class passes
    plain = MemoryBank(dim=2, num_classes=2, capacity=50, kind="plain", plain_threshold=0.5, min_count=5)
    plain.add(members, torch.zeros(20, dtype=torch.long))
    keep, sim = plain.purify(torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), torch.tensor([0, 0]))
    assert keep.tolist() == [True, False]  # cos 45 deg ~ 0.7 >= 0.5; 135 deg < 0.5
    with pytest.raises(MaddConfigError, match="memory_bank.kind"):
        MemoryBank(2, 2, kind="fancy")


# ------------------------------------------------------------------------------------------- MAPOM


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


# ------------------------------------------------------------------------------------------- views


def test_views_keep_shape_and_range():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    mild = build_mild_view(brightness=0.1, noise_std=0.02)(x)
    assert mild.shape == x.shape and 0 <= mild.min() and mild.max() <= 1
    assert (mild - x).abs().mean() < 0.15  # mild stays close to the input
    for modality in MODALITIES:
        y = build_strong_view(modality)(x)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    with pytest.raises(MaddConfigError, match="modality"):
        build_strong_view("xray-ish")


def test_salt_and_pepper_and_contrast_inversion_in_ultrasonic_strong_view():
    torch.manual_seed(0)
    x = torch.full((8, 1, 32, 32), 0.5)
    y = build_strong_view("ultrasonic", degrees=0, translate=0, scale=(1, 1), invert_p=1.0, noise_p=1.0)(x)
    extreme = ((y == 0) | (y == 1)).float().mean()
    assert 0.005 < extreme < 0.1  # salt-and-pepper pixels
    no_geometry = {"degrees": 0, "translate": 0, "scale": (1, 1)}
    inverted = build_strong_view("none", invert_p=1.0, **no_geometry)(torch.full((2, 1, 8, 8), 0.2))
    assert torch.allclose(inverted, torch.full_like(inverted, 0.8))


def test_ct_artifacts_rings_and_streaks():
    torch.manual_seed(0)
    aug = RandomCTArtifacts(rings=(2, 2), streaks=(0, 0), amplitude=(0.3, 0.3), p=1.0)
    out = aug(torch.full((1, 1, 64, 64), 0.5))
    params = aug._params
    delta = (out - 0.5)[0, 0]
    cy, cx = (params["centre"][0] * 64).tolist()
    r = params["ring_radius"][0, 0].item() * 0.5 * math.hypot(64, 64)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    rho = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    on_ring = (rho - r).abs() < 0.5
    off = (rho - r).abs() > 6
    if on_ring.any():
        assert delta[on_ring].abs().mean() > delta[off].abs().mean()  # the ring is where it was drawn
    streaks_only = RandomCTArtifacts(rings=(0, 0), streaks=(1, 1), amplitude=(0.3, 0.3), p=1.0)
    streak = streaks_only(torch.full((1, 1, 32, 32), 0.5))
    assert ((streak - 0.5).abs() > 0.1).float().mean() > 0.02  # a line of changed pixels


# ------------------------------------------------------------------------------------------- callbacks


class _FakeModel:
    """The interface the two MADD callbacks use."""

    def __init__(self) -> None:
        self.syncs, self.emas, self.decay = 0, 0, None
        self._weights = {"alpha": 0.3, "beta": 0.25, "gamma": 0.2, "delta": 0.15, "epsilon": 0.05, "zeta": 0.03,
                         "eta": 0.02}
        self.last_val_f1 = torch.tensor(-1.0)

    def sync_teacher(self) -> None:
        self.syncs += 1

    def ema_teacher(self, decay: float) -> None:
        self.emas, self.decay = self.emas + 1, decay

    def weights(self) -> dict:
        return dict(self._weights)

    def set_weights(self, w) -> None:
        self._weights = dict(w)


def test_teacher_sync_every_n_epochs_at_epoch_start_and_ema_mode():
    from types import SimpleNamespace

    from madd.models.madd.callbacks import TeacherSync

    model, cb = _FakeModel(), TeacherSync(every_n_epochs=5)
    synced_at = []
    for epoch in range(12):
        before = model.syncs
        cb.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), model)
        if model.syncs > before:
            synced_at.append(epoch)
    assert synced_at == [5, 10]  # after 5 and 10 finished epochs
    ema = TeacherSync(mode="ema", ema_decay=0.9)
    for step in (1, 1, 2, 3):  # a repeated global step (gradient accumulation) is no new optimiser step
        ema.on_train_batch_end(SimpleNamespace(global_step=step), model, None, None, 0)
    assert model.emas == 3 and model.decay == 0.9 and model.syncs == 2
    for bad in ({"mode": "sometimes"}, {"every_n_epochs": 0}, {"ema_decay": 1.5}):
        with pytest.raises(MaddConfigError):
            TeacherSync(**bad)


def test_loss_weight_adapter_reads_val_f1_and_updates_the_model():
    from types import SimpleNamespace

    from madd.models.madd.callbacks import LossWeightAdapter

    model, cb = _FakeModel(), LossWeightAdapter(step=0.1)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/f1": torch.tensor(0.40)})
    cb.on_validation_end(trainer, model)  # first validation: remembered, nothing to compare with
    assert model.weights()["alpha"] == 0.3 and float(model.last_val_f1) == pytest.approx(0.40)
    trainer.callback_metrics["val/f1"] = torch.tensor(0.50)
    cb.on_validation_end(trainer, model)
    assert model.weights()["alpha"] == pytest.approx(0.27) and model.weights()["beta"] == pytest.approx(0.275)
    trainer.callback_metrics["val/f1"] = torch.tensor(0.30)
    cb.on_validation_end(trainer, model)
    assert model.weights()["alpha"] == pytest.approx(0.297) and float(model.last_val_f1) == pytest.approx(0.30)


def test_balanced_class_weights_match_scikit_learn_rule():
    from types import SimpleNamespace

    from madd.models.class_weights import balanced_class_weights, check_class_weights, split_class_weights

    labels = [0] * 30 + [1] * 5 + [2] * 5 + [3] * 10  # class 4 absent
    w = balanced_class_weights(labels, 5)
    n, k = 50, 4  # n / (k * count_c) over the 4 classes present
    assert w.tolist() == pytest.approx([n / (k * 30), n / (k * 5), n / (k * 5), n / (k * 10), 1.0])
    records = {"target_labeled": [SimpleNamespace(label=y) for y in labels]}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(records=records))
    assert torch.equal(split_class_weights("balanced", trainer, "target_labeled", 5), w)
    assert torch.equal(split_class_weights(None, trainer, "target_labeled", 5), torch.ones(5))
    assert split_class_weights([1, 2, 3, 4, 5], trainer, "x", 5).tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(MaddConfigError, match="class_weights"):
        split_class_weights("balanced", SimpleNamespace(datamodule=None), "target_labeled", 5)
    for bad in ("inverse", [1.0, 2.0], [1, 1, 1, 1, -1]):
        with pytest.raises(MaddConfigError, match="class_weights"):
            check_class_weights(bad, 5)


def test_pseudo_label_loss_class_weight():
    logits = torch.zeros(2, 3)
    pseudo, keep = torch.tensor([0, 2]), torch.tensor([True, True])
    weighted = AttentionWeightedPseudoLabelLoss()(logits, pseudo, keep, None, torch.tensor([0.5, 1.0, 3.0]))
    assert weighted.item() == pytest.approx((0.5 + 3.0) * math.log(3) / 2)


def test_frozen_bn_statistics_normalises_by_batch_but_keeps_running_stats():
    from madd.models.madd.networks import frozen_bn_statistics

    bn = torch.nn.BatchNorm2d(2).train()
    x = torch.randn(4, 2, 3, 3) * 5 + 3
    with frozen_bn_statistics(bn):
        y = bn(x)
    assert torch.equal(bn.running_mean, torch.zeros(2)) and torch.equal(bn.running_var, torch.ones(2))
    assert y.mean().abs() < 1e-5  # batch statistics were used
    assert bn.momentum == 0.1  # restored
    bn(x)
    assert not torch.equal(bn.running_mean, torch.zeros(2))


@pytest.mark.parametrize("source_bn", ["separate", "shared"])
def test_source_images_move_running_statistics_only_when_shared(source_bn):
    from madd.models.madd import MADDModule

    torch.manual_seed(0)
    model = MADDModule(Backbone("resnet18"), num_classes=3, normal_index=0, views={"modality": "ultrasonic"},
                       joint={"source_bn": source_bn}).train()
    target, source = torch.rand(4, 3, 32, 32), torch.rand(2, 3, 32, 32) * 3 + 2  # another domain
    reference = MADDNet(Backbone("resnet18"), 3)
    reference.load_state_dict(model.student_a.state_dict())
    out = model.model.student_a_pass(torch.cat([target, source]), n_source=2)
    assert out.logits.shape == (6, 3) and [s.shape[0] for s in out.stages] == [6] * 4
    ref_target = reference.train().forward_features(target)
    bn, ref_bn = model.student_a.backbone.stages[0][0].bn1, reference.backbone.stages[0][0].bn1
    if source_bn == "separate":  # target rows normalised by target statistics alone; running stats target-only
        assert torch.allclose(out.logits[:4], ref_target.logits, atol=1e-5)
        assert torch.allclose(bn.running_mean, ref_bn.running_mean)
    else:
        assert not torch.allclose(bn.running_mean, ref_bn.running_mean)


@pytest.mark.parametrize("view", ["mild", "strong"])
def test_pseudo_label_term_trains_the_configured_view(view):
    """``joint.pseudo_label_view``: L_ssl's logits are student A's mild-view rows (Eq. 12) or the strong-view pass
    of student B (FixMatch's weak-to-strong); recorded at the loss's input and matched to the pass that made them."""
    from madd.models.madd import MADDModule

    torch.manual_seed(0)
    model = MADDModule(Backbone("mobilenet_v2", weights=None), num_classes=3, normal_index=0,
                       views={"modality": "ultrasonic"}, joint={"pseudo_label_view": view}, rcsm={"enabled": False},
                       memory_bank={"enabled": False},
                       mapom={"dynamic_threshold": False, "fixed_tau": 0.01}, loss_weights={"delta": 0.0}).train()
    passes, seen = [], {}
    forward = model.student_a.forward_features
    model.student_a.forward_features = lambda x: passes.append(forward(x)) or passes[-1]
    ssl = model.model.loss_ssl.forward
    model.model.loss_ssl.forward = lambda logits, *a: seen.setdefault("logits", logits) is None or ssl(logits, *a)
    g = torch.Generator().manual_seed(0)
    def split(n):
        return {"image": torch.rand(n, 3, 32, 32, generator=g), "label": torch.randint(0, 3, (n,), generator=g),
                "mask": torch.zeros(n, 1, 32, 32), "index": torch.arange(n)}
    model.training_step({"target_labeled": split(2), "target_unlabeled": split(3), "source": split(2)}, 0)
    # passes: student A on the target views, student A on the source views, student B (= A) on the strong views
    assert len(passes) == 3
    expected = passes[2].logits if view == "strong" else passes[0].logits[2:5]
    assert torch.equal(seen["logits"], expected)


def test_pseudo_label_settings_are_checked():
    from madd.models.madd import settings

    with pytest.raises(MaddConfigError, match="model.joint.pseudo_label_view"):
        settings.resolve("joint", {"pseudo_label_view": "weak"})
    with pytest.raises(MaddConfigError, match="model.joint.attention_weighting"):
        settings.resolve("joint", {"attention_weighting": "mean"})


# ------------------------------------------------------------------------- settings: conf/model/madd.yaml's defaults


def test_settings_defaults_are_the_yaml_sections():
    """Every method section's defaults are conf/model/madd.yaml's, key for key; interpolations stay required."""
    from helpers import CONF
    from omegaconf import OmegaConf

    from madd.models.madd import settings

    yaml = OmegaConf.load(CONF / "model" / "madd.yaml")
    assert settings.config_file() == (CONF / "model" / "madd.yaml").resolve()
    for section in settings.SECTIONS:
        expected = OmegaConf.to_container(yaml[section], resolve=False)
        got = settings.defaults(section)
        if section == "views":  # ${data.modality}: only a composed config resolves it
            assert got.pop("modality") == settings.Required("${data.modality}")
            assert expected.pop("modality") == "${data.modality}"
            assert settings.resolve(section, {"modality": "ct"}) == {**expected, "modality": "ct"}
        else:
            assert settings.resolve(section, None) == expected, section
        assert got == expected, section


def test_settings_read_the_yaml_the_config_lookup_finds(tmp_path, monkeypatch):
    """A changed value in another config folder ($MADD_CONFIG_DIR, madd.console's lookup) is the new default."""
    from helpers import CONF

    from madd.models.madd import settings

    (tmp_path / "model").mkdir()
    (tmp_path / "train.yaml").write_text("{}\n")
    text = (CONF / "model" / "madd.yaml").read_text()
    assert "  ema_decay: 0.99\n" in text
    (tmp_path / "model" / "madd.yaml").write_text(text.replace("  ema_decay: 0.99\n", "  ema_decay: 0.5\n"))
    monkeypatch.setenv("MADD_CONFIG_DIR", str(tmp_path))
    assert settings.config_file() == (tmp_path / "model" / "madd.yaml").resolve()
    assert settings.resolve("teacher_sync", None)["ema_decay"] == 0.5
    monkeypatch.delenv("MADD_CONFIG_DIR")
    assert settings.resolve("teacher_sync", None)["ema_decay"] == 0.99


def test_settings_unknown_keys_and_sections_are_errors():
    from madd.models.madd import settings

    with pytest.raises(MaddConfigError, match=r"model\.rcsm\.mask_ration is not a MADD setting"):
        settings.resolve("rcsm", {"mask_ration": [0.1, 0.2]})
    with pytest.raises(MaddConfigError, match=r"model\.views\.strong\.degree is not a MADD setting"):
        settings.resolve("views", {"modality": "ct", "strong": {"degree": 3}})
    with pytest.raises(MaddConfigError, match="not a MADD config section"):
        settings.defaults("optimizer")  # top-level keys other than the 12 method sections are not read


def test_settings_omitted_interpolated_key_is_a_clear_error():
    """views.modality is ${data.modality} in the YAML: a Python caller must pass it, never gets an invented one."""
    from madd.models.madd import MADDModule, settings

    with pytest.raises(MaddConfigError, match=r"model\.views\.modality has no default outside Hydra.*"
                                              r"\$\{data\.modality\}.*views=\{'modality': 'ultrasonic'\}"):
        settings.resolve("views", None)
    with pytest.raises(MaddConfigError, match=r"model\.views\.modality"):
        settings.resolve("views", {"base_augment": "weak"})
    with pytest.raises(MaddConfigError, match=r"model\.views\.modality"):
        MADDModule(Backbone("mobilenet_v2", weights=None), num_classes=3, normal_index=0)
