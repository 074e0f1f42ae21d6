"""The pipeline runs the stages a method declares (madd.models.stage.Stage): its own trainer and checkpoint folder
per stage, the stage's training splits, the hand-over through ``finish``; the stages before the main fit are
skipped when it resumes, the stages after it start from its best weights."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch
from omegaconf import OmegaConf

import madd.pipeline as pipeline
from helpers import TINY_DATA, compose_config
from madd.models.stage import Stage
from madd.utils.instantiate import instantiate_clear as instantiate


class _Declares:
    """A method with one stage before and one after its main fit."""

    def __init__(self) -> None:
        self.loaded = None

    def stages(self):
        yield "before"

    def post_stages(self):
        yield f"after, from {self.loaded}"

    def load_state_dict(self, state) -> None:
        self.loaded = {k: v.tolist() for k, v in state.items()}


class _ServedSplits(L.Callback):
    """Records the training splits the data module serves when the stage's fit starts."""

    def __init__(self, seen: dict) -> None:
        self.seen = seen

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen["served"] = list(trainer.datamodule.train_splits)


def _run(monkeypatch, tmp_path, ckpt_path):
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda cfg, stage, dm: ran.append(stage))
    best = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.tensor([2.0])}}, best)
    trainer = SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(best)),
                              fit=lambda model, **kw: ran.append(("fit", kw["ckpt_path"])))
    wall = {}
    changed = pipeline._run_stages(OmegaConf.create({"ckpt_path": ckpt_path}), _Declares(), None, trainer, wall)
    assert set(wall) == {"stages"}
    return ran, changed


def test_stages_around_the_fit_in_order_and_skipped_before_it_when_resuming(monkeypatch, tmp_path):
    ran, changed = _run(monkeypatch, tmp_path, None)
    assert ran == ["before", ("fit", None), "after, from {'w': [2.0]}"] and changed
    ran, changed = _run(monkeypatch, tmp_path, "last.ckpt")  # the resumed checkpoint holds the first stage's result
    assert ran == [("fit", "last.ckpt"), "after, from {'w': [2.0]}"] and changed


def test_run_stage_fits_in_its_own_folder_on_its_splits_and_hands_on(tmp_path, data_dir):
    cfg = compose_config(["model=supervised", *TINY_DATA, "data.image_size=32", "model/backbone=mobilenet_v2",
                          "trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"], tmp_path, data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="partial")
    seen = {}

    def finish(fitted, best):
        seen.update(module=fitted, best=best, splits=list(dm.train_splits))
        return "handed on"

    stage = Stage("my_stage", module, finish, trainer={"max_epochs": 1}, splits=["target_unlabeled", "target_labeled"],
                  callbacks=lambda trainer: [_ServedSplits(seen)])
    dm.train_splits = ["target_labeled"]
    assert pipeline.run_stage(cfg, stage, dm) == "handed on"
    assert seen["module"] is module and seen["served"] == ["target_unlabeled", "target_labeled"]
    assert dm.train_splits == seen["splits"] == ["target_labeled"]  # given back before finish
    assert seen["best"].startswith(str(tmp_path / "out" / "my_stage" / "checkpoints"))
