"""MADD's configs: the experiments, the Table 6/7/8 ablation overrides, one clear error per bad setting, and the
real-data experiments' splits (skipped without ../shared/data)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_DATA, TINY_SOURCE, compose_config, requires_shared_data

from madd.errors import MaddConfigError
from madd.utils.instantiate import instantiate_clear as instantiate

# MobileNetV2 at 32 px: small steps and small checkpoints on a loaded 2-core machine
TINY = ["experiment=madd_awdd", *TINY_DATA, *TINY_SOURCE, "data.image_size=32", "data.source_batch_size=4",
        "model/backbone=mobilenet_v2", "trainer.limit_train_batches=2", "model.tim.stage1.limit_train_batches=2",
        "model.tim.stage2.limit_train_batches=2", "+trainer.limit_val_batches=1", "callbacks.model_summary.max_depth=1"]


def _cfg(tmp_path, data_dir, *extra):
    return compose_config([*TINY, *extra], tmp_path, data_dir)




# ------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("override,match", [
    ("model.loss_weights.beta=nan", "loss_weights.beta"),
    ("+model.rcsm.mask_rate=0.3", "model.rcsm.mask_rate"),
    ("model.loss_weights.eta=0", "eta=0"),
    ("model.teacher_sync.mode=sometimes", "teacher_sync.mode"),
    ("model.rcsm.mask_ratio=[0.4,0.3]", "mask_ratio"),
])
def test_bad_config_is_one_clear_error(tmp_path, data_dir, override, match):
    cfg = _cfg(tmp_path, data_dir, override)
    with pytest.raises(MaddConfigError, match=match):
        instantiate(cfg.model, _convert_="partial")


ABLATIONS = {
    "no_tim": lambda m: not m.tim_cfg["enabled"],
    "no_daa": lambda m: isinstance(m.student_a.adapter, torch.nn.Identity),
    "no_consistency": lambda m: not m.model.cons_on,
    "no_rcsm": lambda m: not m.model.rcsm_on and not hasattr(m.model, "decoder"),
    "no_mapom": lambda m: not m.model.dynamic_tau and not m.model.bank_on,
    "fixed_plain": lambda m: not m.model.dynamic_tau and m.model.bank.kind == "plain",
    "fixed_adaptive": lambda m: not m.model.dynamic_tau and m.model.bank.kind == "domain_adaptive",
    "dynamic_plain": lambda m: m.model.dynamic_tau and m.model.bank.kind == "plain",
    "dynamic_adaptive": lambda m: m.model.dynamic_tau and m.model.bank.kind == "domain_adaptive",
    "full": lambda m: m.tim_cfg["enabled"] and m.model.rcsm_on and m.model.cons_on and m.model.dynamic_tau and m.model.bank_on,
    "no_da_loss": lambda m: m.weights()["epsilon"] == 0,
    "no_domain_features": lambda m: m.cfg["mapom"]["domain_features"] is False,
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_configs_are_overrides_of_madd_awdd(tmp_path, data_dir, name):
    cfg = compose_config([f"experiment=ablation/{name}", "model/backbone=mobilenet_v2"], tmp_path, data_dir)
    assert cfg.data.target.domain == "awdd" and cfg.task_name == f"ablation_{name}"
    assert ABLATIONS[name](instantiate(cfg.model, _convert_="partial"))


def test_synthetic_experiments_compose(tmp_path, data_dir):
    awdd = compose_config(["experiment=madd_awdd"], tmp_path, data_dir)
    assert awdd.model._target_ == "madd.models.madd.MADDModule" and awdd.model.views.modality == "ultrasonic"
    assert awdd.data.label_budget.total == 50 and awdd.model.backbone.name == "tf_efficientnet_lite0"
    assert awdd.model.backbone.weights == "package" and awdd.model.backbone.freeze_bn
    bdd = compose_config(["experiment=madd_bdd"], tmp_path, data_dir)
    assert bdd.data.target.domain == "bdd" and bdd.model.views.modality == "visual"


@pytest.mark.parametrize("domain", ["kolektorsdd", "xsdd"])
def test_semi_supervised_real_data_presets_share_madds_joint_budget(tmp_path, data_dir, domain):
    """MADD, FixMatch and Mean Teacher compare at equal steps: one budget file, kept by trainer=gpu, and the
    command line still wins over it."""
    names = {"kolektorsdd": ["madd_kolektorsdd", "fixmatch_kolektorsdd", "mean_teacher_kolektorsdd"],
             "xsdd": ["madd_neu_to_xsdd", "fixmatch_xsdd", "mean_teacher_xsdd"]}[domain]
    for name in names:
        for extra, want in [([], (10, 20)), (["trainer=gpu"], (10, 20)), (["trainer.max_epochs=3"], (3, 20))]:
            t = compose_config([f"experiment={name}", *extra], tmp_path, data_dir).trainer
            assert (t.max_epochs, t.limit_train_batches) == want, (name, extra)


@requires_shared_data
@pytest.mark.parametrize("name,n_source_classes", [("madd_neu_to_xsdd", 3), ("madd_kolektorsdd", 2)])
def test_real_data_experiments_build_their_splits(tmp_path, data_dir, name, n_source_classes):
    cfg = compose_config([f"experiment={name}", "data.verify=false"], tmp_path, data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.train_splits = ["target_labeled", "target_unlabeled", "source"]
    dm.setup("fit")
    summary = dm.summary()
    assert sum(1 for c in summary["source"].values() if c) == n_source_classes  # mapped source classes
    per_class = cfg.data.label_budget.per_class
    assert all(c == per_class for c in summary["target_labeled"].values())
    batch = next(iter(dm.split_loader("source", train=True)))
    assert batch["image"].shape[-2:] == tuple(dm.datasets["source"].size_hw)
