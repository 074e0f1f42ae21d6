"""Unit tests of the pruning building blocks: schedules, scores, masks, groups, physical removal, cost, reports."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from madd.pruning.groups import find_groups, filter_norms
from madd.compression.masks import apply_masks, compute_masks, keep_count, kept_fraction, lowest_norm_mask
from madd.compression.network_cost import count_flops, count_macs, count_params, measure_latency
from madd.pruning.physical import apply_architecture, conv_widths, remove_pruned_channels
from madd.compression.report import to_markdown, with_comparisons, write_report
from madd.compression.soft_pruning import asfp_rate
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.classifier import ImageClassifier




def classifier(name: str = "resnet18", seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    net = ImageClassifier(Backbone(name), 3).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so a forgotten BN channel would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net


# ----------------------------------------------------------------------------- ASFP schedule (NOTES.md)
@pytest.mark.parametrize("epochs", [8, 40, 100])
def test_asfp_schedule_hits_its_three_anchor_points(epochs):
    target = 0.3
    assert asfp_rate(0, epochs, target) == 0.0
    assert asfp_rate(epochs / 8, epochs, target) == pytest.approx(0.75 * target, abs=1e-9)
    assert asfp_rate(epochs, epochs, target) == pytest.approx(target)
    rates = [asfp_rate(t, epochs, target) for t in range(epochs + 1)]
    assert all(b >= a for a, b in zip(rates, rates[1:])) and max(rates) <= target


def test_asfp_schedule_matches_the_closed_form_approximation():
    # NOTES.md: about P_target * (1 - 4^(-8t/E))
    for t in range(0, 41, 5):
        assert asfp_rate(t, 40, 0.2) == pytest.approx(0.2 * (1 - 4 ** (-8 * t / 40)), abs=2e-5)


# ----------------------------------------------------------------------------- counts and scores
def test_keep_count_compounds_over_rounds_and_rounds_up():
    # 64 filters, 3 rounds of 30% of the alive ones: 64 -> 45 -> 32 -> 23 (int() of 19.2, 13.5, 9.6 pruned)
    alive = 64
    for expected in (45, 32, 23):
        alive = keep_count(alive, 0.3)
        assert alive == expected
    assert keep_count(64, 0.3, round_to=8) == 48
    assert keep_count(3, 0.99) == 1  # never an empty layer


def test_filter_l1_norm_is_sum_of_absolute_weights():
    net = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 1, 1))
    net[0].weight.data = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]], [[[0.0, 0.0], [-1.0, 1.0]]]])
    group = find_groups(net, torch.rand(1, 1, 4, 4), scope="all")[0]
    assert group.producers == ["0"] and group.norms == ["1"]
    assert filter_norms(net, group, p=1).tolist() == [6.5, 2.0]
    assert filter_norms(net, group, p=2).tolist() == pytest.approx([math.sqrt(1 + 4 + 9 + 0.25), math.sqrt(2)])


def test_lowest_norm_mask_keeps_pruned_channels_pruned():
    imp = torch.tensor([5.0, 1.0, 3.0, 4.0, 2.0])
    assert lowest_norm_mask(imp, 3).tolist() == [True, False, True, True, False]
    alive = torch.tensor([True, True, True, False, True])  # channel 3 already pruned despite its norm
    assert lowest_norm_mask(imp, 3, alive).tolist() == [True, False, True, False, True]


# ----------------------------------------------------------------------------- channel groups
def test_resnet18_groups_inner_and_all():
    net = classifier()
    image = torch.rand(1, 3, 32, 32)
    inner = find_groups(net, image, "inner")
    assert len(inner) == 8 and all(len(g.producers) == 1 and g.producers[0].endswith("conv1") for g in inner)
    full = find_groups(net, image, "all")
    residual = [g for g in full if g.is_residual]
    assert len(full) == 12 and len(residual) == 4
    stream0 = next(g for g in residual if "backbone.stem.0" in g.producers)
    assert stream0.producers == ["backbone.stages.0.0.conv2", "backbone.stages.0.1.conv2", "backbone.stem.0"]
    stream1 = next(g for g in residual if "backbone.stages.1.0.downsample.0" in g.producers)
    assert "backbone.stages.1.0.downsample.1" in stream1.norms
    only_layer4 = find_groups(net, image, "inner", include=[r"stages\.3\."])
    assert [g.key for g in only_layer4] == ["backbone.stages.3.0.conv1", "backbone.stages.3.1.conv1"]
    with pytest.raises(MaddConfigError, match="scope"):
        find_groups(net, image, "everything")
    with pytest.raises(MaddConfigError, match="no prunable"):
        find_groups(net, image, "inner", include=["nothing-matches"])


class TokenAdapter(nn.Module):
    """conv -> BN -> ReLU -> 1x1 conv, then a per-location linear adapter added residually (optionally LayerNorm)."""

    def __init__(self, layer_norm: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8) if layer_norm else nn.Identity()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.conv2(torch.relu(self.bn(self.conv(x)))).permute(0, 2, 3, 1)
        return self.head(self.norm(self.fc(h) + h).mean((1, 2)))


def test_linear_producers_are_masked_and_channel_mixing_norms_are_left_alone():
    image = torch.rand(2, 3, 8, 8)
    with_norm = TokenAdapter(layer_norm=True).eval()
    # the LayerNorm mixes conv2's channels: removing one would change the others, so that group is not prunable
    assert [g.producers for g in find_groups(with_norm, image[:1], "all")] == [["conv"]]
    net = TokenAdapter(layer_norm=False).eval()
    groups = find_groups(net, image[:1], "all")
    assert ["conv2", "fc"] in [g.producers for g in groups]
    masks = compute_masks(net, groups, 0.5)
    apply_masks(net, groups, masks)
    with torch.no_grad():
        torch.testing.assert_close(remove_pruned_channels(copy.deepcopy(net), image[:1], groups, masks)(image),
                                   net(image), atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- masks and physical removal
@pytest.mark.parametrize("name,scope", [
    ("resnet18", "inner"),
    ("resnet18", "all"),
    ("resnet50", "inner"),  # bottleneck blocks: conv1 and conv2 are inner
    ("mobilenet_v2", "all"),  # depthwise convolutions follow their expansion convolution
    ("tf_efficientnet_lite0", "inner"),  # the default backbone: depthwise-separable inverted residuals (timm)
    ("tf_efficientnet_lite0", "all"),
])
def test_physical_removal_equals_the_hard_masked_network(name, scope):
    net = classifier(name)
    image = torch.rand(2, 3, 32, 32)
    groups = find_groups(net, image[:1], scope)
    masks = None
    for _ in range(3):  # three rounds of 30%
        masks = compute_masks(net, groups, 0.3, p=1, previous=masks)
        apply_masks(net, groups, masks, hard=True)
    assert kept_fraction(masks) == pytest.approx(0.343, abs=0.03)
    with torch.no_grad():
        masked_out = net(image)
    small = remove_pruned_channels(copy.deepcopy(net), image[:1], groups, masks)
    assert count_params(small) < 0.75 * count_params(net)
    with torch.no_grad():
        torch.testing.assert_close(small(image), masked_out, atol=1e-5, rtol=1e-4)
    # the pruned shapes are rebuilt from the state dict alone (no pickled module)
    fresh = classifier(name, seed=1)
    apply_architecture(fresh, image[:1], conv_widths(small.state_dict()))
    fresh.load_state_dict(small.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(image), masked_out, atol=1e-5, rtol=1e-4)


def test_soft_masks_leave_batchnorm_so_pruned_filters_recover():
    net = classifier().train()
    groups = find_groups(net, torch.rand(1, 3, 32, 32), "inner")
    g = groups[0]
    masks = compute_masks(net, groups, 0.5, p=2)
    dropped = ~masks[g.key]
    modules = dict(net.named_modules())
    conv, bn = modules[g.producers[0]], modules[g.norms[0]]

    apply_masks(net, groups, masks, hard=False)
    assert conv.weight[dropped].abs().sum() == 0 and bn.weight[dropped].abs().sum() > 0
    net(torch.rand(8, 3, 32, 32)).sum().backward()
    assert conv.weight.grad[dropped].abs().sum() > 0  # SFP: pruned filters keep being updated

    net.zero_grad()
    apply_masks(net, groups, masks, hard=True)
    assert bn.weight[dropped].abs().sum() == 0 and bn.bias[dropped].abs().sum() == 0
    net(torch.rand(8, 3, 32, 32)).sum().backward()
    assert conv.weight.grad[dropped].abs().sum() == 0  # Li et al.: held at zero


def test_resnet18_three_rounds_reach_the_flops_target_only_with_residual_streams():
    # the target: FLOPs after 3 rounds of 30% at most 25% of the baseline (Table III: 1.8e9 -> 4.1e8)
    net = classifier()
    # the paper's "1.8e9 FLOPs" for ResNet-18 are multiply-accumulates
    assert count_macs(net, torch.rand(1, 3, 224, 224)) == pytest.approx(1.82e9, rel=0.01)
    image = torch.rand(1, 3, 64, 64)  # the ratio hardly depends on the resolution (only the head does not scale)
    base = count_macs(net, image)
    ratios = {}
    for scope in ("inner", "all"):
        groups = find_groups(net, image, scope)
        masks = None
        for _ in range(3):
            masks = compute_masks(net, groups, 0.3, previous=masks)
        ratios[scope] = count_macs(remove_pruned_channels(copy.deepcopy(net), image, groups, masks), image) / base
    assert ratios["all"] <= 0.25 < ratios["inner"]


# ----------------------------------------------------------------------------- cost measurement
def test_flop_and_mac_counts_match_hand_computation():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False))
    image = torch.rand(1, 3, 8, 8)
    macs = 4 * 3 * 3 * 3 * 8 * 8  # out_channels * in_channels * k * k * output pixels
    assert count_macs(net, image) == macs
    assert count_flops(net, image) == 2 * macs
    assert count_params(net) == 4 * 3 * 3 * 3


def test_latency_is_measured_per_batch_size():
    lat = measure_latency(nn.Conv2d(3, 4, 3), (3, 16, 16), batch_sizes=(1, 4), min_run_time=0.01)
    assert set(lat) == {1, 4} and all(v > 0 for v in lat.values())


# ----------------------------------------------------------------------------- reports
def test_report_ratios_changes_and_files(tmp_path):
    rows = [
        {"stage": "baseline", "params": 100, "flops": 1000, "latency_b1_ms": 10.0, "accuracy": 0.90, "FAR": 0.10},
        {"stage": "round 1", "params": 40, "flops": 250, "latency_b1_ms": 4.0, "accuracy": 0.885, "FAR": 0.05},
    ]
    df = with_comparisons(rows)
    assert df["params_ratio"].tolist() == [1.0, 0.4]
    assert df["flops_ratio"].tolist() == [1.0, 0.25]
    assert df["accuracy_change"].round(6).tolist() == [0.0, -1.5]  # points, negative = worse
    assert df["FAR_change"].round(6).tolist() == [0.0, -5.0]
    md = to_markdown(df, ["stage", "params", "flops_ratio", "accuracy", "accuracy_change"])
    assert md.splitlines()[3] == "| round 1 | 4.00e+01 | 0.250 | 88.50 | -1.50 |"
    write_report(rows, tmp_path)
    assert (tmp_path / "report.csv").read_text().startswith("stage,")
    assert "| baseline |" in (tmp_path / "report.md").read_text()
