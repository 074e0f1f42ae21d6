"""Safe checkpoint loading (madd.checkpoint): rebuild from madd_config, weights_only, pruned shapes, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_DATA, compose_config
from hydra.utils import instantiate

from madd.checkpoint import build_network, load_module, load_network, network_spec, save_module
from madd.pruning.groups import find_groups
from madd.compression.masks import apply_masks, compute_masks
from madd.pruning.physical import remove_pruned_channels
from madd.errors import MaddConfigError
from madd.pipeline import run_config




class Payload:
    """Any non-tensor object: torch.load(weights_only=True) refuses to unpickle it."""


@pytest.fixture()
def module_and_config(tmp_path, data_dir):
    cfg = compose_config(TINY_DATA, tmp_path, data_dir)
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="partial").eval()
    return module, run_config(cfg)


def test_round_trip_without_the_pretrained_weight_file(module_and_config, tmp_path):
    module, config = module_and_config
    config["model"]["backbone"]["weights"] = "IMAGENET1K_V1"  # not in the local cache: must not be needed
    path = save_module(module, tmp_path / "m.ckpt", config)
    loaded = load_module(path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), module(images))
    assert loaded.run_config["model"]["backbone"]["weights"] == "IMAGENET1K_V1" and not loaded.training


def test_physically_pruned_state_is_rebuilt_from_its_shapes(module_and_config, tmp_path):
    module, config = module_and_config
    image = torch.rand(1, 3, 64, 64)
    groups = find_groups(module.net, image, "all")
    masks = compute_masks(module.net, groups, 0.5)
    apply_masks(module.net, groups, masks)
    small = copy.deepcopy(module)
    remove_pruned_channels(small.net, image, groups, masks)
    loaded = load_module(save_module(small, tmp_path / "small.ckpt", config))
    assert loaded.net.head.in_features == small.net.head.in_features < 512
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), module(image), atol=1e-5, rtol=1e-4)


def test_unsafe_or_foreign_files_are_refused(module_and_config, tmp_path):
    module, config = module_and_config

    torch.save({"state_dict": {}, "madd_config": config, "x": Payload()}, tmp_path / "pickled.ckpt")
    with pytest.raises(MaddConfigError, match="weights_only"):
        load_module(tmp_path / "pickled.ckpt")
    torch.save({"state_dict": module.state_dict()}, tmp_path / "bare.ckpt")
    with pytest.raises(MaddConfigError, match="madd_config"):
        load_module(tmp_path / "bare.ckpt")
    with pytest.raises(MaddConfigError, match="does not exist"):
        load_module(tmp_path / "missing.ckpt")
    other = dict(config, model=dict(config["model"], num_classes=2, class_names=["good", "defect"]))
    torch.save({"state_dict": module.state_dict(), "madd_config": other}, tmp_path / "mismatch.ckpt")
    with pytest.raises(Exception, match="size mismatch|does not match"):
        load_module(tmp_path / "mismatch.ckpt")


def test_load_network_records_a_self_contained_spec(module_and_config, tmp_path):
    module, config = module_and_config
    path = save_module(module, tmp_path / "m.ckpt", config)
    net = load_network(path)
    spec = network_spec(net)
    assert spec["_target_"] == "madd.checkpoint.build_network" and spec["attr"] == "net"
    rebuilt = instantiate(spec)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]
    assert isinstance(build_network(config["model"]), type(net))
    with pytest.raises(MaddConfigError, match="no network `student`"):
        load_network(path, attr="student")


@pytest.mark.parametrize("eval_network", ["student_a", "teacher"])
def test_a_madd_checkpoint_with_a_pruned_student_a_is_rebuilt(eval_network, tmp_path, data_dir):
    """Phase 3 prunes student A inside MADD's torch model (``model.student_a``): the loader fits that network's
    shapes inside the container (``holds_networks``), not through the container's forward, which runs the teacher
    when ``eval_network=teacher``; the teacher stays whole."""
    cfg = compose_config(["experiment=madd_awdd", *TINY_DATA, "model/backbone=resnet18", "model.tim.enabled=false",
                          f"model.eval_network={eval_network}"], tmp_path, data_dir)
    torch.manual_seed(0)
    module = instantiate(cfg.model, _convert_="partial").eval()
    student, image = module.model.student_a, torch.rand(1, 3, 64, 64)
    groups = find_groups(student, image, "inner")
    masks = compute_masks(student, groups, 0.5)
    apply_masks(student, groups, masks)
    remove_pruned_channels(student, image, groups, masks)
    loaded = load_module(save_module(module, tmp_path / "pruned_madd.ckpt", run_config(cfg)))
    widths = {n: m.out_channels for n, m in loaded.model.student_a.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert widths == {n: m.out_channels for n, m in student.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert loaded.model.teacher.backbone.stages[0][0].conv1.out_channels == 64  # the teacher is not pruned
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval_outputs(image)[0], module.eval_outputs(image)[0], atol=1e-5, rtol=1e-4)
