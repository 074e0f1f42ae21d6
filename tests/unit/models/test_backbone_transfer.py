"""Backbone-only transfer (RTLAOI-DD section 2.6) and checkpoint loading, on real torchvision networks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.classifier import ImageClassifier
from madd.models.supervised import SupervisedClassifier
from madd.transfer import TransferReport, load_checkpoint_state, transfer_backbone


torch.manual_seed(0)


def _randomise(model: nn.Module) -> nn.Module:
    """Fresh torchvision nets share BN init (ones/zeros): make every tensor distinct so equality means copied."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t))
    return model


def test_torchvision_resnet_4_to_5_classes_copies_backbone_keeps_head():
    source = _randomise(torchvision.models.resnet18(num_classes=4))
    target = torchvision.models.resnet18(num_classes=5)
    head_before = {k: v.clone() for k, v in target.fc.state_dict().items()}
    report = transfer_backbone(source.state_dict(), target)

    src, tgt = source.state_dict(), target.state_dict()
    backbone = [k for k in tgt if not k.startswith("fc.")]
    assert sorted(report.transferred) == sorted(backbone)
    for k in backbone:
        assert torch.equal(src[k], tgt[k]), k
    for k, v in target.fc.state_dict().items():
        assert torch.equal(v, head_before[k])  # the head keeps its own initialisation
    assert report.skipped == {"fc.weight": "not a backbone tensor", "fc.bias": "not a backbone tensor"}
    assert report.mismatched == {} and report.missing == [] and report.frozen == []
    assert report.prefix_map == {"": ""}


def test_supervised_checkpoint_into_new_classifier(tmp_path):
    source = SupervisedClassifier(Backbone("resnet18"), num_classes=4)
    _randomise(source)
    ckpt = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3, "madd_config": {"seed": 0}}, ckpt)

    target = SupervisedClassifier(Backbone("resnet18"), num_classes=5)
    head_before = target.net.head.weight.detach().clone()
    state = load_checkpoint_state(ckpt)
    report = transfer_backbone(state, target)

    assert report.prefix_map == {"net.backbone.": "net.backbone."}
    for k, v in source.net.backbone.state_dict().items():
        assert torch.equal(v, target.net.backbone.state_dict()[k]), k
    assert torch.equal(target.net.head.weight, head_before)
    assert report.skipped["net.head.weight"] == "outside the mapped backbone prefixes"
    assert len(report.transferred) == len(source.net.backbone.state_dict())


def test_torchvision_into_madd_backbone_translates_names():
    source = _randomise(torchvision.models.resnet18(num_classes=10))
    target = ImageClassifier(Backbone("resnet18"), num_classes=3)
    report = transfer_backbone(source.state_dict(), target)
    assert report.prefix_map == {"": "backbone."}
    assert torch.equal(target.backbone.stem[0].weight, source.conv1.weight)
    assert torch.equal(target.backbone.stem[1].running_var, source.bn1.running_var)
    assert torch.equal(target.backbone.stages[3][1].conv2.weight, source.layer4[1].conv2.weight)
    assert report.missing == []


def test_mobilenet_torchvision_into_madd_backbone():
    source = _randomise(torchvision.models.mobilenet_v2(num_classes=7))
    target = ImageClassifier(Backbone("mobilenet_v2"), num_classes=2)
    report = transfer_backbone(source.state_dict(), target)
    assert report.missing == [] and report.mismatched == {}
    # stages[2] holds features[7:14]: position 2 is features[9]
    assert torch.equal(target.backbone.stages[2][2].conv[1][0].weight, source.features[9].conv[1][0].weight)
    assert set(report.skipped) == {"classifier.1.weight", "classifier.1.bias"}


def test_shape_mismatch_is_reported_and_left_at_init():
    source = _randomise(torchvision.models.resnet18(num_classes=4))
    state = dict(source.state_dict())
    state["conv1.weight"] = torch.rand(64, 1, 7, 7)  # a grey-input source network
    target = torchvision.models.resnet18(num_classes=4)
    before = target.conv1.weight.detach().clone()
    report = transfer_backbone(state, target)
    assert report.mismatched == {"conv1.weight": ((64, 1, 7, 7), (64, 3, 7, 7))}
    assert torch.equal(target.conv1.weight, before)
    assert "conv1.weight" not in report.transferred
    assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_missing_source_tensors_are_listed():
    source = _randomise(torchvision.models.resnet18(num_classes=4))
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4.")}
    target = torchvision.models.resnet18(num_classes=4)
    report = transfer_backbone(state, target)
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)
    assert len(report.missing) == len([k for k in target.state_dict() if k.startswith("layer4.")])


def test_freeze_stages_freezes_stem_and_first_stages():
    source = _randomise(torchvision.models.resnet18(num_classes=4))
    target = ImageClassifier(Backbone("resnet18"), num_classes=5)
    report = transfer_backbone(source.state_dict(), target, freeze_stages=2)
    frozen = {n for n, p in target.named_parameters() if not p.requires_grad}
    assert frozen == set(report.frozen)
    assert all(n.startswith(("backbone.stem.", "backbone.stages.0.")) for n in frozen)
    assert any(n.startswith("backbone.stem.") for n in frozen)
    assert all(p.requires_grad for p in target.backbone.stages[1].parameters())
    assert target.head.weight.requires_grad
    # the same groups Backbone.freeze would pick
    ref = ImageClassifier(Backbone("resnet18", freeze_stages=2), num_classes=5)
    assert frozen == {n for n, p in ref.named_parameters() if not p.requires_grad}


def test_several_backbones_need_an_explicit_prefix_map():
    class TwoStudents(nn.Module):
        def __init__(self):
            super().__init__()
            self.student1 = ImageClassifier(Backbone("resnet18"), 3)
            self.student2 = ImageClassifier(Backbone("resnet18"), 3)

    source = _randomise(torchvision.models.resnet18(num_classes=4))
    target = TwoStudents()
    with pytest.raises(MaddConfigError, match="prefix_map"):
        transfer_backbone(source.state_dict(), target)
    report = transfer_backbone(source.state_dict(), target, prefix_map={"": "student2.backbone."})
    assert torch.equal(target.student2.backbone.stem[0].weight, source.conv1.weight)
    assert not torch.equal(target.student1.backbone.stem[0].weight, source.conv1.weight)
    assert all(k.startswith("student2.") for k in report.transferred)


def test_nothing_transferable_is_an_error():
    target = torchvision.models.resnet18(num_classes=4)
    with pytest.raises(MaddConfigError, match="backbone"):
        transfer_backbone({"encoder.weight": torch.zeros(3)}, target)
    with pytest.raises(MaddConfigError, match="matches no key"):
        transfer_backbone(target.state_dict(), target, prefix_map={"net.backbone.": ""})


def test_report_renders_and_serialises():
    from rich.console import Console

    source = torchvision.models.resnet18(num_classes=4)
    report = transfer_backbone(source.state_dict(), torchvision.models.resnet18(num_classes=2))
    console = Console(record=True, width=120)
    console.print(report)
    text = console.export_text()
    assert "transferred" in text and "120" in text
    assert "120 transferred" in report.summary()
    d = report.to_dict()
    assert isinstance(d["transferred"], list) and d["prefix_map"] == {"": ""}
    assert isinstance(TransferReport(), TransferReport)


def test_load_checkpoint_state_errors(tmp_path):
    with pytest.raises(MaddConfigError, match="does not exist"):
        load_checkpoint_state(tmp_path / "nope.ckpt")
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(MaddConfigError, match="corrupt"):
        load_checkpoint_state(bad)
    truncated = tmp_path / "truncated.pth"
    torch.save(torchvision.models.resnet18().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(MaddConfigError, match=str(truncated.name)):
        load_checkpoint_state(truncated)
    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, pickled)
    with pytest.raises(MaddConfigError, match="weights_only"):
        load_checkpoint_state(pickled)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(MaddConfigError, match="no tensor"):
        load_checkpoint_state(empty)


def test_load_checkpoint_state_plain_pth(tmp_path):
    path = tmp_path / "r18.pth"
    net = torchvision.models.resnet18(num_classes=4)
    torch.save(net.state_dict(), path)
    state = load_checkpoint_state(path)
    assert set(state) == set(net.state_dict())
