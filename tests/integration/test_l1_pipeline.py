"""L1 filter pruning through train.py's pipeline: rounds, report, pruned checkpoint, exact resume."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, compose_config

from madd.checkpoint import load_module, read_checkpoint
from madd.compression import L1FilterPruning
from madd.compression.network_cost import count_params
from madd.errors import MaddConfigError
from madd.pipeline import train

# 1 training epoch, then 2 rounds x 1 fine-tuning epoch; ResNet-18 on 48x48 images
L1 = [
    "callbacks=[default,l1_pruning]",
    *TINY_DATA,
    "data.image_size=48",
    "data.target.image_size=48",
    "trainer.max_epochs=3",
    "callbacks.l1_pruning.rounds=2",
    "callbacks.l1_pruning.finetune_epochs=1",
    "callbacks.l1_pruning.latency=false",
    "callbacks.model_checkpoint.save_top_k=-1",
    "logger=csv",
]




@pytest.fixture(scope="module")
def l1_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("l1")
    cfg = compose_config(L1, tmp, data_dir)
    train(cfg)
    return tmp / "out", cfg


def test_rounds_report_and_pruned_checkpoint(l1_run):
    out, _ = l1_run
    report = pd.read_csv(out / "pruning" / "report.csv")
    assert report["stage"].tolist() == ["baseline", "round 1", "round 2"]
    assert report["epochs_trained"].tolist() == [1, 2, 3]  # measured before round 1, at the end of each round
    assert report["kept_channels"].round(2).tolist() == [1.0, 0.7, 0.49]
    assert report["params"].is_monotonic_decreasing and report["flops"].is_monotonic_decreasing
    assert {"accuracy", "mAP", "DR", "FAR", "accuracy_change", "flops_ratio"} <= set(report.columns)
    assert "| round 2 |" in (out / "pruning" / "report.md").read_text()

    # the last Lightning checkpoint holds the masked network (full shapes, pruned filters zero) ...
    masked = load_module(out / "checkpoints" / "last.ckpt")
    zero_filters = sum(int((m.weight.flatten(1).abs().sum(1) == 0).sum()) for m in masked.net.modules()
                       if isinstance(m, torch.nn.Conv2d))
    assert zero_filters > 0
    # ... and pruned.ckpt the physically pruned one: fewer parameters, the same predictions
    small = load_module(out / "pruning" / "pruned.ckpt")
    assert count_params(small.net) == report["params"].iloc[-1] < count_params(masked.net)
    images = torch.rand(4, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(images), masked(images), atol=1e-4, rtol=1e-4)
    assert "madd_config" in read_checkpoint(out / "pruning" / "pruned.ckpt")


def test_finetuning_holds_a_constant_fraction_of_the_initial_lr(l1_run):
    out, cfg = l1_run
    group = read_checkpoint(out / "checkpoints" / "last.ckpt")["optimizer_states"][0]["param_groups"][0]
    assert group["madd_base_lr"] == cfg.model.optimizer.lr  # set by the callback, checkpointed for resumes

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    cb = L1FilterPruning(finetune_lr_factor=0.2)
    trainer = SimpleNamespace(optimizers=[optimizer])
    for _ in range(3):  # the scheduler decays at every epoch end, the callback re-sets at every epoch start
        optimizer.step()
        scheduler.step()
        cb._hold_finetune_lr(trainer)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_resume_from_a_mid_round_checkpoint_is_exact(l1_run, tmp_path, data_dir):
    out, _ = l1_run
    # epoch_001.ckpt: after round 1 was pruned and fine-tuned; resuming must prune round 2 identically
    cfg = compose_config([*L1, f"ckpt_path={out / 'checkpoints' / 'epoch_001.ckpt'}"], tmp_path, data_dir)
    train(cfg)
    first = read_checkpoint(out / "checkpoints" / "last.ckpt")
    resumed = read_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    state = next(v for k, v in resumed["callbacks"].items() if "L1FilterPruning" in k)
    assert state["rounds_done"] == 2 and [r["stage"] for r in state["rows"]] == ["baseline", "round 1"]


def test_too_few_epochs_for_the_rounds_is_a_config_error(tmp_path, data_dir):
    cfg = compose_config([*L1, "trainer.max_epochs=1"], tmp_path, data_dir)
    with pytest.raises(MaddConfigError, match="trainer.max_epochs=1 is too short"):
        train(cfg)
