"""MADD's callbacks (callbacks.py): when the teacher is updated, how the loss weights follow the validation F1."""

from __future__ import annotations

import pytest
import torch

from madd.errors import MaddConfigError


class _FakeModel:
    """The interface the two MADD callbacks use."""

    def __init__(self) -> None:
        self.syncs, self.emas, self.decay = 0, 0, None
        self._weights = {"alpha": 0.3, "beta": 0.25, "gamma": 0.2, "delta": 0.15, "epsilon": 0.05, "zeta": 0.03,
                         "eta": 0.02}
        self.last_val_f1 = torch.tensor(-1.0)

    def sync_teacher(self) -> None:
        self.syncs += 1

    def ema_teacher(self, decay: float) -> None:
        self.emas, self.decay = self.emas + 1, decay

    def weights(self) -> dict:
        return dict(self._weights)

    def set_weights(self, w) -> None:
        self._weights = dict(w)


def test_teacher_sync_every_n_epochs_at_epoch_start_and_ema_mode():
    from types import SimpleNamespace

    from madd.models.madd.callbacks import TeacherSync

    model, cb = _FakeModel(), TeacherSync(every_n_epochs=5)
    synced_at = []
    for epoch in range(12):
        before = model.syncs
        cb.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), model)
        if model.syncs > before:
            synced_at.append(epoch)
    assert synced_at == [5, 10]  # after 5 and 10 finished epochs
    ema = TeacherSync(mode="ema", ema_decay=0.9)
    for step in (1, 1, 2, 3):  # a repeated global step (gradient accumulation) is no new optimiser step
        ema.on_train_batch_end(SimpleNamespace(global_step=step), model, None, None, 0)
    assert model.emas == 3 and model.decay == 0.9 and model.syncs == 2
    warm, decays = TeacherSync(mode="ema", ema_decay=0.9, warmup=True), []
    for step in (1, 2, 3, 9, 10, 50):  # min(1 - 1/(step+1), 0.9): 1/2, 2/3, 3/4, then 0.9 from step 9
        warm.on_train_batch_end(SimpleNamespace(global_step=step), model, None, None, 0)
        decays.append(model.decay)
    assert decays == pytest.approx([0.5, 2 / 3, 0.75, 0.9, 0.9, 0.9])
    for bad in ({"mode": "sometimes"}, {"every_n_epochs": 0}, {"ema_decay": 1.5}):
        with pytest.raises(MaddConfigError):
            TeacherSync(**bad)


def test_loss_weight_adapter_reads_val_f1_and_updates_the_model():
    from types import SimpleNamespace

    from madd.models.madd.callbacks import LossWeightAdapter

    model, cb = _FakeModel(), LossWeightAdapter(step=0.1)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/f1": torch.tensor(0.40)})
    cb.on_validation_end(trainer, model)  # first validation: remembered, nothing to compare with
    assert model.weights()["alpha"] == 0.3 and float(model.last_val_f1) == pytest.approx(0.40)
    trainer.callback_metrics["val/f1"] = torch.tensor(0.50)
    cb.on_validation_end(trainer, model)
    assert model.weights()["alpha"] == pytest.approx(0.27) and model.weights()["beta"] == pytest.approx(0.275)
    trainer.callback_metrics["val/f1"] = torch.tensor(0.30)
    cb.on_validation_end(trainer, model)
    assert model.weights()["alpha"] == pytest.approx(0.297) and float(model.last_val_f1) == pytest.approx(0.30)
