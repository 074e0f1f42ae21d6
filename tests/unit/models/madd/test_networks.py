"""MADD's networks (networks.py): the adapter of Eq. 5, the student/teacher network, the decoder of Eq. 9, BatchNorm passes that keep the running statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.madd.networks import (
    DomainAdaptiveAdapter,
    MADDNet,
    ReconstructionDecoder,
    _split_stride,
)


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
