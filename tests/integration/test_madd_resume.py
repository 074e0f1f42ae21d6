"""MADD's adaptive state: a weights_only checkpoint round trip, exact resume from ``last.ckpt`` and the
non-finite-loss stop that keeps the last good checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from helpers import TINY_DATA, TINY_SOURCE, compose_config
from madd.callbacks.finite_loss import NonFiniteLossError
from madd.models.backbones import Backbone
from madd.models.madd import MADDModule
from madd.pipeline import train

# MobileNetV2 at 32 px: small steps and small checkpoints on a loaded 2-core machine
TINY = ["experiment=madd_awdd", "trainer.check_val_every_n_epoch=1", *TINY_DATA, *TINY_SOURCE, "data.image_size=32", "data.source_batch_size=4",
        "model/backbone=mobilenet_v2", "trainer.limit_train_batches=2", "model.tim.stage1.limit_train_batches=2",
        "model.tim.stage2.limit_train_batches=2", "+trainer.limit_val_batches=1", "callbacks.model_summary.max_depth=1"]


def _cfg(tmp_path, data_dir, *extra):
    return compose_config([*TINY, *extra], tmp_path, data_dir)


class StopAfterEpochs(L.Callback):
    """Ends fit after ``epochs`` epochs (before the epoch's checkpoint), to simulate an interrupted run."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


# ------------------------------------------------------------------------------------------- state and resume


def test_checkpoint_roundtrip_of_adaptive_state_weights_only(tmp_path):
    cfg = {"num_classes": 3, "class_names": ["good", "a", "b"], "normal_index": 0, "views": {"modality": "ultrasonic"}}
    model = MADDModule(Backbone("resnet18"), **cfg)
    model.model.bank.add(torch.randn(7, 512), torch.tensor([0, 1, 2, 0, 1, 2, 0]), torch.arange(7))
    model.model.prototype.update(torch.ones(128), torch.tensor(2.0))
    model.set_weights({**model.weights(), "beta": 0.4})
    model.sync_teacher()
    model.tau_history = [0.61, 0.72]
    model.val_cache = {"confidence": torch.rand(4), "correct": torch.ones(4)}
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "m.ckpt")
    loaded = torch.load(tmp_path / "m.ckpt", weights_only=True)
    fresh = MADDModule(Backbone("resnet18"), **cfg)
    fresh.load_state_dict(loaded["state_dict"])
    fresh.on_load_checkpoint(loaded)
    assert torch.equal(fresh.model.bank.features, model.model.bank.features) and int(fresh.model.bank.ptr) == 7
    assert torch.equal(fresh.model.prototype.prototype, torch.full((128,), 0.5)) and bool(fresh.model.prototype.initialized)
    assert fresh.weights()["beta"] == pytest.approx(0.4) and int(fresh.model.teacher_syncs) == 1
    assert fresh.tau_history == [0.61, 0.72]
    assert torch.equal(fresh.val_cache["confidence"], model.val_cache["confidence"])


def test_checkpoint_of_the_earlier_layout_loads(tmp_path):
    """Before the torch model held them, the networks, bank and buffers sat at the top of the state dict
    (``student_a.*``, ``bank.*``, ``loss_weights``): such checkpoints load unchanged (Lightning's hook, and
    madd.checkpoint's readers through ``upgrade_state_dict``)."""
    from madd.checkpoint import check_checkpoint_fits, current_layout

    cfg = {"num_classes": 3, "class_names": ["good", "a", "b"], "normal_index": 0, "views": {"modality": "ultrasonic"}}
    torch.manual_seed(0)
    model = MADDModule(Backbone("resnet18"), **cfg)
    model.set_weights({**model.weights(), "beta": 0.4})
    state = model.state_dict()
    old = {k.removeprefix("model."): v for k, v in state.items()}
    assert "student_a.head.weight" in old and "loss_weights" in old and "last_val_f1" in old
    fresh = MADDModule(Backbone("resnet18"), **cfg)
    assert current_layout(fresh, old).keys() == state.keys()
    check_checkpoint_fits("old.ckpt", {"state_dict": old}, fresh)
    ckpt = {"state_dict": dict(old)}
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    assert fresh.weights()["beta"] == pytest.approx(0.4)


def test_resume_from_last_ckpt_matches_uninterrupted_run(tmp_path, data_dir):
    common = ["model.tim.enabled=false", "trainer.max_epochs=3", "trainer.deterministic=true",
              "model.teacher_sync.mode=copy", "model.teacher_sync.every_n_epochs=2"]  # the sync point is resumed
    full = train(_cfg(tmp_path / "full", data_dir, *common))
    stop = ["+callbacks.stop._target_=test_madd_resume.StopAfterEpochs", "+callbacks.stop.epochs=2"]
    train(_cfg(tmp_path / "part", data_dir, *common, "test=false", *stop))
    last = tmp_path / "part" / "out" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    # resumed in place (same checkpoint folder), so ModelCheckpoint also resumes its best-so-far bookkeeping
    # and the test step picks the same best checkpoint as the uninterrupted run
    resumed = train(_cfg(tmp_path / "resumed", data_dir, *common, f"ckpt_path={last}",
                         f"callbacks.model_checkpoint.dirpath={last.parent}"))
    a = torch.load(tmp_path / "full" / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert b["epoch"] == 2
    assert resumed == pytest.approx(full, abs=1e-6)
    assert int(a["state_dict"]["model.teacher_syncs"]) == 1  # synced once, at the start of epoch 2 (after the resume)
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=1e-6, msg=k)
    assert b["madd_state"]["tau_history"] == pytest.approx(a["madd_state"]["tau_history"])


def test_non_finite_loss_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from madd.models.madd import loss as loss_module

    calls = {"n": 0}
    original = loss_module.ReconstructionLoss.forward

    def nan_from_epoch_1(self, *args):
        calls["n"] += 1
        value = original(self, *args)
        return value * float("nan") if calls["n"] > 2 else value  # 2 steps per epoch: epoch 1 goes NaN

    monkeypatch.setattr(loss_module.ReconstructionLoss, "forward", nan_from_epoch_1)
    cfg = _cfg(tmp_path, data_dir, "model.tim.enabled=false", "trainer.max_epochs=3")
    with pytest.raises(NonFiniteLossError, match="train/loss_rec") as err:
        train(cfg)
    assert "epoch 1" in str(err.value)
    last = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


