"""Semi-supervised baselines sharing data, backbone and label budget with MADD: FixMatch and Mean Teacher,
plus the EMA helpers (madd.models.ema) that Mean Teacher and MADD's teacher use.

Loss formulas are checked on hand-made logits; the Lightning modules on tiny batches (the hidden labels of
``target_unlabeled`` must not change the loss) and end to end through ``madd.pipeline.train``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from helpers import TINY_DATA, compose_config
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.ema import copy_weights, ema_update
from madd.models.fixmatch import FixMatch, FixMatchLoss
from madd.models.mean_teacher import MeanTeacher, MeanTeacherLoss, sigmoid_rampup, softmax_mse_loss
from madd.pipeline import train


# ----------------------------------------------------------------------------------------------- EMA


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_ema_update_averages_parameters_and_copies_buffers():
    teacher, student = _tiny_net(), _tiny_net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
        for p in student.parameters():
            p.fill_(3.0)
        student[1].running_mean.fill_(7.0)
    student[1].num_batches_tracked.fill_(5)
    ema_update(teacher, student, decay=0.9)
    for p in teacher.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.9 * 1.0 + 0.1 * 3.0))
    assert torch.equal(teacher[1].running_mean, torch.full((2,), 7.0))
    assert int(teacher[1].num_batches_tracked) == 5
    ema_update(teacher, student, decay=0.0)  # decay 0: a copy
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_copy_weights_and_errors():
    teacher, student = _tiny_net(), _tiny_net()
    copy_weights(teacher, student)
    assert all(torch.equal(t, s) for t, s in zip(teacher.state_dict().values(), student.state_dict().values()))
    assert teacher[0].weight is not student[0].weight  # copied, not shared
    with pytest.raises(ValueError, match="decay"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="same architecture"):
        ema_update(nn.Linear(2, 2), _tiny_net(), 0.5)


# ----------------------------------------------------------------------------------------------- FixMatch loss


def test_fixmatch_loss_threshold_mask_hand_computed():
    # weak view: row 0 confidence sigmoid(4) = 0.982 >= 0.95 (pseudo 1); row 1 sigmoid(2) = 0.881 < 0.95
    logits_x, labels_x = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    weak = torch.tensor([[0.0, 4.0], [2.0, 0.0]])
    strong = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    out = FixMatchLoss(threshold=0.95, lambda_u=1.0)(logits_x, labels_x, weak, strong)
    assert out.mask.tolist() == [1.0, 0.0]
    assert out.pseudo_labels.tolist() == [1, 0]
    ce_row0 = math.log(1 + math.e)  # CE of logits (1, 0) against class 1
    assert out.loss_sup.item() == pytest.approx(math.log(2))
    assert out.loss_unsup.item() == pytest.approx(ce_row0 / 2)  # averaged over all muB = 2 images
    assert out.loss.item() == pytest.approx(math.log(2) + ce_row0 / 2)
    assert FixMatchLoss(0.95, 3.0)(logits_x, labels_x, weak, strong).loss.item() == pytest.approx(
        math.log(2) + 3.0 * ce_row0 / 2)
    out.loss.backward()
    assert strong.grad[1].abs().sum() == 0  # rejected image: no gradient
    assert strong.grad[0].abs().sum() > 0


def test_fixmatch_threshold_is_inclusive_and_weak_view_gets_no_gradient():
    p = 0.95
    weak = torch.tensor([[math.log(p / (1 - p)), 0.0]], requires_grad=True)  # confidence exactly 0.95
    strong = torch.zeros(1, 2, requires_grad=True)
    out = FixMatchLoss(threshold=0.95 - 1e-6)(torch.zeros(1, 2), torch.tensor([1]), weak, strong)
    assert out.mask.item() == 1.0
    out.loss.backward()
    assert weak.grad is None  # pseudo-labels are targets, not trained through
    assert FixMatchLoss(threshold=0.96)(torch.zeros(1, 2), torch.tensor([1]), weak, strong).mask.item() == 0.0
    with pytest.raises(ValueError, match="threshold"):
        FixMatchLoss(threshold=1.5)


def test_fixmatch_class_weight_scales_labelled_and_accepted_pseudo_terms():
    # same numbers as above; class weights (1, 4): the labelled row is class 0 (weight 1 in a weighted mean, so
    # CE stays ln 2), the accepted pseudo-label is class 1 (weight 4), the rejected row stays 0; mask unchanged
    logits_x, labels_x = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    weak = torch.tensor([[0.0, 4.0], [2.0, 0.0]])
    strong = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    out = FixMatchLoss(0.95, 1.0)(logits_x, labels_x, weak, strong, torch.tensor([1.0, 4.0]))
    assert out.mask.tolist() == [1.0, 0.0]
    assert out.loss_sup.item() == pytest.approx(math.log(2))
    assert out.loss_unsup.item() == pytest.approx(4 * math.log(1 + math.e) / 2)


# ----------------------------------------------------------------------------------------------- Mean Teacher loss


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(5, 5) == 1.0
    assert sigmoid_rampup(50, 5) == 1.0
    assert sigmoid_rampup(-1, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(3, 0) == 1.0


def test_mean_teacher_loss_hand_computed():
    # student uniform (0.5, 0.5); teacher softmax(ln 3, 0) = (0.75, 0.25): MSE = (0.25^2 + 0.25^2) / 2
    student = torch.zeros(2, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]], requires_grad=True)
    assert softmax_mse_loss(student, teacher).item() == pytest.approx(0.0625 / 2)  # second row agrees
    loss = MeanTeacherLoss(consistency_weight=10.0, rampup_epochs=4.0)
    out = loss(student, teacher, torch.tensor([0]), epoch=2.0)
    assert out.weight == pytest.approx(10.0 * math.exp(-5 * 0.25))
    assert out.loss_sup.item() == pytest.approx(math.log(2))  # CE on the first (labelled) row only
    assert out.loss.item() == pytest.approx(math.log(2) + out.weight * 0.03125)
    out.loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    assert loss(student, teacher, torch.tensor([0]), epoch=10.0).weight == 10.0
    # class weights enter the cross-entropy only: two labelled rows (CE ln 2 each) of classes 0 and 1,
    # weights (1, 3): the weighted mean (1 ln 2 + 3 ln 2) / 4 is still ln 2; one row of class 1 alone is ln 2 too
    weighted = loss(student, teacher, torch.tensor([0, 1]), epoch=10.0, class_weight=torch.tensor([1.0, 3.0]))
    assert weighted.loss_sup.item() == pytest.approx(math.log(2))
    uneven = loss(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), teacher, torch.tensor([0, 1]), 10.0, torch.tensor([1.0, 3.0]))
    ce0, ce1 = math.log(1 + math.exp(-2)), math.log(2)
    assert uneven.loss_sup.item() == pytest.approx((ce0 + 3 * ce1) / 4)


# ----------------------------------------------------------------------------------------------- Lightning modules


def _backbone() -> Backbone:
    return Backbone("mobilenet_v2", weights=None)  # the smallest supported backbone: a loaded 2-core CPU


def _batch(seed: int, n_lab: int = 4, n_unlab: int = 6, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    def split(n):
        return {"image": torch.rand(n, 3, size, size, generator=g), "label": torch.randint(0, 3, (n,), generator=g)}
    return {"target_labeled": split(n_lab), "target_unlabeled": split(n_unlab)}


def _step_loss(model, batch) -> torch.Tensor:
    torch.manual_seed(123)  # same augmentation draws for both calls
    with torch.no_grad():
        return model.training_step(batch, 0)


@pytest.mark.parametrize("make", [
    lambda: FixMatch(_backbone(), 3, threshold=0.0),  # threshold 0: every pseudo-label enters the loss
    lambda: MeanTeacher(_backbone(), 3),
])
def test_unlabeled_labels_never_enter_the_loss(make):
    torch.manual_seed(0)
    model = make()
    model.train()
    batch = _batch(0)
    base = _step_loss(model, batch)
    corrupted = {k: dict(v) for k, v in batch.items()}
    corrupted["target_unlabeled"]["label"] = (batch["target_unlabeled"]["label"] + 1) % 3
    assert torch.equal(_step_loss(model, corrupted), base)
    # control: the labelled labels do enter the loss, so the comparison above can fail
    relabeled = {k: dict(v) for k, v in batch.items()}
    relabeled["target_labeled"]["label"] = (batch["target_labeled"]["label"] + 1) % 3
    assert not torch.equal(_step_loss(model, relabeled), base)


def test_bad_config_values_name_the_key():
    with pytest.raises(MaddConfigError, match="model.threshold"):
        FixMatch(_backbone(), 3, threshold=1.2)
    with pytest.raises(MaddConfigError, match="model.lambda_u"):
        FixMatch(_backbone(), 3, lambda_u=-1.0)
    with pytest.raises(MaddConfigError, match="model.ema_decay"):
        MeanTeacher(_backbone(), 3, ema_decay=1.5)
    with pytest.raises(MaddConfigError, match="model.consistency_weight"):
        MeanTeacher(_backbone(), 3, consistency_weight=-1.0)


def test_mean_teacher_teacher_is_not_trained_and_is_evaluated():
    torch.manual_seed(0)
    model = MeanTeacher(_backbone(), 3)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.student.parameters()}
    with torch.no_grad():
        model.teacher.head.bias.fill_(5.0)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), model.teacher(x))
    assert model.current_ema_decay(1) == 0.5 and model.current_ema_decay(10_000) == 0.99


def test_mean_teacher_fresh_fit_starts_teacher_from_student_resume_keeps_it():
    torch.manual_seed(0)
    model = MeanTeacher(_backbone(), 3)
    with torch.no_grad():
        model.student.head.weight.add_(1.0)  # e.g. a backbone transfer into the student after construction
    model._trainer = SimpleNamespace(ckpt_path="resumed.ckpt")
    model.on_fit_start()
    assert not torch.equal(model.teacher.head.weight, model.student.head.weight)
    model._trainer = SimpleNamespace(ckpt_path=None)
    model.on_fit_start()
    assert torch.equal(model.teacher.head.weight, model.student.head.weight)
    model._trainer = None


# ----------------------------------------------------------------------------------------------- end to end

SMALL = [*TINY_DATA, "data.image_size=32"]  # decode the shared 64 px synthetic cache at 32 px: a loaded CPU


def test_fixmatch_fast_dev_run_end_to_end(tmp_path, data_dir):
    cfg = compose_config(["model=fixmatch", "trainer=debug", *SMALL], tmp_path, data_dir)
    metrics = train(cfg)
    assert "test/mAP" in metrics and math.isfinite(metrics["test/mAP"])


def _mean_teacher_run(tmp_path, data_dir, name: str, epochs: int, *extra: str) -> dict:
    out = tmp_path / name
    cfg = compose_config(
        ["model=mean_teacher", "model/backbone=mobilenet_v2", *SMALL, f"trainer.max_epochs={epochs}",
         "trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
         # keep every epoch: Lightning 2.6 refreshes last.ckpt only when a top-k checkpoint is written
         "callbacks.model_checkpoint.save_top_k=-1", *extra],
        out, data_dir,
    )
    metrics = train(cfg)
    return {"metrics": metrics, "last": out / "out" / "checkpoints" / "last.ckpt"}


def test_mean_teacher_end_to_end_checkpoint_and_exact_resume(tmp_path, data_dir):
    # more than a fast_dev_run: fit writes checkpoints, test reloads the best one with weights_only=True
    full = _mean_teacher_run(tmp_path, data_dir, "full", 2)
    assert "test/mAP" in full["metrics"] and math.isfinite(full["metrics"]["test/mAP"])
    ckpt = torch.load(full["last"], map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    teacher_keys = [k for k in state if k.startswith("teacher.")]
    assert teacher_keys and len(teacher_keys) == len([k for k in state if k.startswith("student.")])
    # after 4 EMA steps the teacher is the running mean of the student's weights, not the student
    assert not torch.equal(state["teacher.head.weight"], state["student.head.weight"])
    assert ckpt["madd_config"]["model"]["_target_"] == "madd.models.mean_teacher.MeanTeacher"
    model = MeanTeacher(_backbone(), 5)
    model.load_state_dict(state)
    assert torch.equal(model.teacher.head.weight, state["teacher.head.weight"])

    # stop the same 2-epoch schedule after epoch 1, resume: teacher and student must be the uninterrupted run's
    # (a fresh fit copies student -> teacher in on_fit_start; a resumed one must not)
    first = _mean_teacher_run(tmp_path, data_dir, "first", 2, "test=false", "+trainer.max_steps=2")
    resumed = _mean_teacher_run(tmp_path, data_dir, "resumed", 2, "test=false", f"ckpt_path={first['last']}")
    state_resumed = torch.load(resumed["last"], map_location="cpu", weights_only=True)["state_dict"]
    for key in ("teacher.head.weight", "teacher.backbone.stem.0.0.weight", "student.head.weight"):
        assert torch.equal(state_resumed[key], state[key]), key
