"""Knowledge distillation: the loss against hand computation, the module, and MADD Phase 3 (prune + distil)."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from helpers import CONF, TINY_DATA, compose_config
from hydra.utils import instantiate

from madd.compression.network_cost import count_params
from madd.models.madd.phase3 import phase3_options, phase3_stage
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.classifier import ImageClassifier
from madd.models.distillation import DistillationLoss, DistillationModule, SoftTargetLoss
from madd.pipeline import run_stage




def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_soft_target_loss_matches_hand_computation():
    student, teacher, t = [1.0, 2.0, 0.0], [2.0, 1.0, 0.5], 2.0
    p = _softmax([x / t for x in teacher])
    q = _softmax([x / t for x in student])
    expected = t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    got = SoftTargetLoss(t)(torch.tensor([student]), torch.tensor([teacher]))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    same = torch.randn(4, 3)
    assert float(SoftTargetLoss(4.0)(same, same.clone())) == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_weights_its_terms():
    s, tch, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    parts = DistillationLoss(temperature=3.0, alpha_kd=0.7, alpha_ce=0.3)(s, tch, s[:3], y[:3])
    kd = SoftTargetLoss(3.0)(s, tch)
    ce = torch.nn.functional.cross_entropy(s[:3], y[:3])
    torch.testing.assert_close(parts["loss"], 0.7 * kd + 0.3 * ce)
    with pytest.raises(MaddConfigError):
        DistillationLoss(alpha_kd=0.0, alpha_ce=0.0)
    with pytest.raises(MaddConfigError):
        SoftTargetLoss(0.0)


def test_teacher_stays_frozen_and_in_eval_mode():
    student = ImageClassifier(Backbone("resnet18"), 2)
    teacher = ImageClassifier(Backbone("resnet18"), 2)
    module = DistillationModule(student, teacher, class_names=["good", "defect"], normal_index=0)
    module.train()
    assert not module.teacher.training and not module.teacher.net.training and module.student.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert module.train_splits() == ["target_labeled"]
    with pytest.raises(MaddConfigError, match="predicts 2 classes"):
        DistillationModule(student, teacher, num_classes=3)


def test_phase3_prunes_and_distils_without_touching_its_inputs(tmp_path, data_dir):
    cfg = compose_config([*TINY_DATA, "data.image_size=48", "data.target.image_size=48"], tmp_path, data_dir)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    torch.manual_seed(0)
    teacher = ImageClassifier(Backbone("resnet18"), datamodule.num_classes)
    student = copy.deepcopy(teacher)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    stage = phase3_stage(student, teacher, datamodule, {"rounds": 2, "epochs": 1, "latency": False,
                                                        "kd_splits": ["target_labeled", "target_unlabeled"]})
    small = run_stage(cfg, stage, datamodule)
    assert count_params(small) < 0.6 * count_params(student)
    assert small(torch.rand(2, 3, 48, 48)).shape == (2, datamodule.num_classes)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # input untouched
    assert datamodule.train_splits == ["target_labeled"]  # restored
    report = pd.read_csv(tmp_path / "out" / "phase3" / "report.csv")
    assert report["stage"].tolist() == ["baseline", "round 1", "round 2"]
    assert (tmp_path / "out" / "phase3" / "checkpoints" / "last.ckpt").is_file()


def test_phase3_options_reject_unknown_keys():
    assert phase3_options({"enabled": True, "rate": 0.2})["rate"] == 0.2
    with pytest.raises(MaddConfigError, match="unknown keys"):
        phase3_options({"rounds": 3, "prune_ratio": 0.5})


def test_phase3_options_defaults_are_the_yaml_phase3_section():
    """Phase 3's options have one home, conf/model/madd.yaml's phase3 section (``enabled`` is the pipeline's)."""
    from omegaconf import OmegaConf

    section = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "madd.yaml").phase3)
    assert section.pop("enabled") is False
    assert phase3_options(None) == section
    assert phase3_options({"enabled": True}) == section
    assert {"rate", "rounds", "epochs", "temperature", "alpha_kd", "alpha_ce", "scope"} <= set(section)
