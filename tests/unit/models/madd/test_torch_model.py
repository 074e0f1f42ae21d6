"""MADD's torch model (torch_model.py): source rows' BatchNorm statistics, the view L_ssl trains, the pseudo-label loss's class weights."""

from __future__ import annotations

import math

import pytest
import torch

from madd.models.backbones import Backbone
from madd.models.madd.loss import AttentionWeightedPseudoLabelLoss
from madd.models.madd.networks import (
    MADDNet,
)


def test_pseudo_label_loss_class_weight():
    logits = torch.zeros(2, 3)
    pseudo, keep = torch.tensor([0, 2]), torch.tensor([True, True])
    weighted = AttentionWeightedPseudoLabelLoss()(logits, pseudo, keep, None, torch.tensor([0.5, 1.0, 3.0]))
    assert weighted.item() == pytest.approx((0.5 + 3.0) * math.log(3) / 2)


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
