"""MADD end to end through ``madd.pipeline.train`` on tiny synthetic data: both TIM stages and their checkpoints,
the stage-1 checkpoint shortcut, the logged quantities and the Phase-3 hook."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import TINY_DATA, TINY_SOURCE, compose_config
from hydra.utils import instantiate
from madd.models.backbones import Backbone
from madd.deploy.cost import record_cost
from madd.errors import MaddConfigError
from madd.models.madd.evaluate_tim import evaluate_tim_stage
from madd.models.madd.transfer_init import STAGE1, STAGE2, SourcePretraining, best_stage2_checkpoint, load_stage2_network
from madd.pipeline import run_stage, train
from madd.utils.instantiate import instantiate_clear as instantiate

NAMES = ["good", "crack", "pore", "edge_burn", "incomplete_weld"]
# MobileNetV2 at 32 px: small steps and small checkpoints on a loaded 2-core machine
TINY = ["experiment=madd_awdd", "trainer.check_val_every_n_epoch=1", *TINY_DATA, *TINY_SOURCE, "data.image_size=32", "data.source_batch_size=4",
        "model/backbone=mobilenet_v2", "trainer.limit_train_batches=2", "model.tim.stage1.limit_train_batches=2",
        "model.tim.stage2.limit_train_batches=2", "+trainer.limit_val_batches=1", "callbacks.model_summary.max_depth=1"]


def _cfg(tmp_path, data_dir, *extra):
    return compose_config([*TINY, *extra], tmp_path, data_dir)




# ------------------------------------------------------------------------------------------- end to end with TIM


def test_end_to_end_with_both_tim_stages(tmp_path, data_dir):
    # copy sync: the teacher stays stage 2's network within the first epoch (an EMA teacher moves every step)
    cfg = _cfg(tmp_path, data_dir, "trainer.max_epochs=1", "model.tim.stage1.enabled=true",
               "model.tim.stage1.max_epochs=1", "model.tim.stage2.max_epochs=1", "model.tim.stage2.freeze_stages=3",
               "model.teacher_sync.mode=copy")
    metrics = train(cfg)
    for key in ("test/mAP", "test/DR", "test/FAR", "test/f1", "test/pixel_auroc", "test/pixel_f1", "test/box_mAP50"):
        assert key in metrics and math.isfinite(metrics[key]), key
    out = tmp_path / "out"
    s1 = torch.load(out / STAGE1 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    s2 = torch.load(out / STAGE2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("net.backbone.") for k in s1["state_dict"])
    assert any(k.startswith("net.adapter.") for k in s2["state_dict"])  # the adapter is inserted in stage 2
    main = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = main["state_dict"]
    # the teacher is stage 2's best network (no sync within one epoch); the students started there too
    best2 = sorted((out / STAGE2 / "checkpoints").glob("epoch_*.ckpt"))[-1]
    s2best = torch.load(best2, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in s2best.items():
        if k.startswith("net.") and "num_batches_tracked" not in k:
            torch.testing.assert_close(state["model.teacher." + k[4:]], v, rtol=0, atol=0)
    # stage 2 froze the stem and the first two stages: those weights are stage 1's, unchanged
    frozen = [k for k in s2best if k.startswith(("net.backbone.stem.", "net.backbone.stages.0.",
                                                 "net.backbone.stages.1.")) and k.endswith("weight")]
    assert frozen
    for k in frozen:
        torch.testing.assert_close(s2best[k], s1["state_dict"][k])
    # everything adaptive is in the checkpoint
    for key in ("loss_weights", "tau_prev", "teacher_syncs", "bank.features", "bank.labels", "bank.ptr",
                "prototype.prototype", "meta_learner.net.0.weight", "decoder.out.weight"):
        assert "model." + key in state, key
    assert "last_val_f1" in state
    assert set(main["madd_state"]) == {"tau_history", "val_cache"}
    assert len(main["madd_state"]["tau_history"]) == 1 and 0.5 <= main["madd_state"]["tau_history"][0] <= 0.9
    assert float(state["last_val_f1"]) >= 0  # the weight callback saw the validation F1
    # the TIM network on its own (the "what does the joint stage add" diagnostic) tests on the same split
    tim_only = evaluate_tim_stage(main["madd_config"], out)
    assert math.isfinite(tim_only["test/mAP"]) and best_stage2_checkpoint(out) == best2
    # the deployed network (Table 5) is what inference runs, not the teacher + two students + meta-learner
    record = json.loads((out / "metrics.json").read_text())
    assert 0 < record["deploy_params"] < 0.7 * record["params"] and record["flops"] > 0
    # a run without them gets them back from its checkpoint (python -m madd.deploy.cost <run dir>)
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in record.items() if k != "flops"}))
    cost = record_cost(out)
    again = json.loads((out / "metrics.json").read_text())
    assert again["flops"] == cost["flops"] == record["flops"] and again["deploy_params"] == record["deploy_params"]
    # every quantity of the issue is logged
    import pandas as pd

    logged = set(pd.read_csv(next((out / "csv").rglob("metrics.csv"))).columns)
    for key in ("train/loss_ce", "train/loss_ssl", "train/loss_cons_p", "train/loss_cons_f", "train/loss_rec",
                "train/loss_da", "train/loss_mem", "train/loss_meta", "train/tau", "train/acceptance_rate",
                "train/weight/alpha", "train/weight/eta", "train/bank_fill/good", "train/bank_fill/edge_burn",
                "train/mask_ratio", "val/mAP", "val/pixel_auroc"):
        assert any(c == key or c.startswith(key + "_") for c in logged), key


def test_stage1_off_sends_the_pretrained_backbone_straight_to_stage2(tmp_path, data_dir):
    cfg = _cfg(tmp_path, data_dir, "model.tim.stage1.enabled=false", "model.tim.stage2.max_epochs=1")
    model = instantiate(cfg.model, _convert_="partial")
    dm = instantiate(cfg.data, _convert_="all")
    dm.train_splits = list(model.train_splits())
    for stage in model.stages():
        run_stage(cfg, stage, dm)
    summary = model.tim_summary
    assert summary["stage1"] == {"checkpoint": None, "trained": False}
    assert summary["transfer"]["mismatched"] == 0 and summary["transfer"]["missing"] == 0
    assert not (tmp_path / "out" / "tim_stage1_source").exists() and (tmp_path / "out" / "tim_stage2_target").exists()


def test_stage1_checkpoint_skips_stage1_and_keeps_head_only_for_same_classes(tmp_path, data_dir):
    torch.manual_seed(3)
    source = SourcePretraining(Backbone("mobilenet_v2"), 5, class_names=NAMES)
    stem = source.net.backbone.stem[0][0].weight.detach().clone()
    results = {}
    for name, classes in (("same", NAMES), ("other", ["a", "b", "c", "d", "e"])):
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": source.state_dict(), "hyper_parameters": {"class_names": classes}}, path)
        cfg = _cfg(tmp_path / name, data_dir, f"model.tim.stage1_ckpt={path}", "model.tim.stage2.max_epochs=1",
                   "model.tim.stage2.freeze_stages=3")
        dm = instantiate(cfg.data, _convert_="all")
        model = instantiate(cfg.model, _convert_="partial")
        dm.train_splits = model.train_splits()
        for stage in model.stages():
            run_stage(cfg, stage, dm)
        results[name] = model.tim_summary
        out = tmp_path / name / "out"
        assert not (out / STAGE1).exists() and (out / STAGE2 / "checkpoints" / "last.ckpt").is_file()
        torch.testing.assert_close(model.student_a.backbone.stem[0][0].weight, stem)  # transferred, frozen in stage 2
        torch.testing.assert_close(model.teacher.backbone.stem[0][0].weight, stem)
        assert dm.train_splits == model.train_splits()  # the stages gave the splits back
    assert results["same"]["transfer"]["head_kept"] is True
    assert results["other"]["transfer"]["head_kept"] is False
    assert results["same"]["stage1"] == {"checkpoint": str(tmp_path / "same.ckpt"), "trained": False}


def test_stage2_checkpoint_of_a_run_folder_skips_both_stages(tmp_path, data_dir):
    """model.tim.stage2_ckpt=<run dir>: the best stage-2 network starts teacher and students, nothing trains."""
    cfg = _cfg(tmp_path, data_dir)
    donor = instantiate(cfg.model, _convert_="partial")
    with torch.no_grad():
        for p in donor.student_a.parameters():
            p.add_(0.5)
    run = tmp_path / "finished_run"
    ckpts = run / STAGE2 / "checkpoints"
    ckpts.mkdir(parents=True)
    state = {"net." + k: v for k, v in donor.student_a.state_dict().items()}
    torch.save({"state_dict": state}, ckpts / "epoch_007.ckpt")
    torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in state.items()}}, ckpts / "last.ckpt")

    cfg = _cfg(tmp_path / "job", data_dir, f"model.tim.stage2_ckpt={run}")
    dm = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="partial")
    assert list(model.stages()) == []  # nothing to fit
    assert model.tim_summary == {"stage2": {"checkpoint": str(ckpts / "epoch_007.ckpt"), "trained": False}}
    assert not (tmp_path / "job" / "out" / STAGE1).exists() and not (tmp_path / "job" / "out" / STAGE2).exists()
    for net in (model.student_a, model.teacher):
        for k, v in donor.student_a.state_dict().items():
            torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)

    # a network of another shape (another backbone) is refused with the key to fix
    other = _cfg(tmp_path / "other", data_dir, "model/backbone=resnet18")
    with pytest.raises(MaddConfigError, match="model.tim.stage2_ckpt=.*does not fit"):
        load_stage2_network(instantiate(other.model, _convert_="partial"), ckpts / "epoch_007.ckpt")
    with pytest.raises(MaddConfigError, match="no tim_stage2_target"):
        load_stage2_network(model, tmp_path)
    with pytest.raises(MaddConfigError, match="model.tim.stage2_ckpt=.*does not exist"):
        load_stage2_network(model, tmp_path / "typo")


def test_phase3_stage_runs_after_fit_and_test_uses_its_network(tmp_path, data_dir, monkeypatch):
    import copy

    import madd.models.madd.phase3 as phase3

    seen = {}
    real_stage = phase3.phase3_stage

    def fake_phase3(student, teacher, datamodule, cfg):
        seen.update(student=student, teacher=teacher, cfg=dict(cfg))
        stage = real_stage(student, teacher, datamodule, {**cfg, "rounds": 1, "epochs": 1, "latency": False})

        def always_crack(module, best):
            seen["pruned"] = stage_finish(module, best)  # the real stage ran: its pruned student came back
            small = copy.deepcopy(student)
            with torch.no_grad():
                small.head.bias.zero_()
                small.head.bias[1] = 100.0  # always "crack": makes the replaced network visible in the test metrics
            return small

        stage_finish, stage.finish = stage.finish, always_crack
        return stage

    monkeypatch.setattr(phase3, "phase3_stage", fake_phase3)
    cfg = _cfg(tmp_path, data_dir, "model.tim.enabled=false", "trainer.max_epochs=1", "model.phase3.enabled=true",
               "model.phase3.rate=0.5")
    metrics = train(cfg)
    assert seen["cfg"]["rate"] == 0.5 and not any(p.requires_grad for p in seen["teacher"].parameters())
    assert sum(p.numel() for p in seen["pruned"].parameters()) < sum(p.numel() for p in seen["student"].parameters())
    assert (tmp_path / "out" / "phase3" / "report.csv").is_file()  # the stage's own folder
    assert metrics["test/FAR"] == pytest.approx(1.0) and metrics["test/DR"] == pytest.approx(1.0)
