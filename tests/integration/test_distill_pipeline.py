"""experiment=distill_awdd: prune + distil a trained checkpoint; the result loads without the teacher's file."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import TINY_DATA, compose_config

from madd.checkpoint import load_module, read_checkpoint
from madd.compression.network_cost import count_params
from madd.deploy.export import deploy_model
from madd.errors import MaddConfigError
from madd.pipeline import train

SMALL = [*TINY_DATA, "data.image_size=48", "data.target.image_size=48", "data.source.num_images=20",
         "data.source.image_size=48"]




def test_distill_experiment_from_a_checkpoint(tmp_path, data_dir):
    teacher_cfg = compose_config([*SMALL, "trainer.max_epochs=1"], tmp_path / "teacher", data_dir)
    train(teacher_cfg)
    teacher_ckpt = tmp_path / "teacher" / "out" / "checkpoints" / "last.ckpt"

    cfg = compose_config(["experiment=distill_awdd", *SMALL, f"model.teacher.path={teacher_ckpt}", "trainer.max_epochs=2",
                          "callbacks.l1_pruning.rounds=2", "callbacks.l1_pruning.finetune_epochs=1",
                          "callbacks.l1_pruning.latency=false"], tmp_path / "distill", data_dir)
    metrics = train(cfg)
    assert "test/accuracy" in metrics
    out = tmp_path / "distill" / "out"
    report = pd.read_csv(out / "pruning" / "report.csv")
    assert report["stage"].tolist() == ["baseline", "round 1", "round 2"]

    # the checkpoint stores how to rebuild both networks, not the teacher's path: it loads after the file is gone
    config = read_checkpoint(out / "pruning" / "pruned.ckpt")["madd_config"]
    assert config["model"]["teacher"]["_target_"] == "madd.checkpoint.build_network"
    teacher_ckpt.unlink()
    small = load_module(out / "pruning" / "pruned.ckpt")
    masked = load_module(out / "checkpoints" / "last.ckpt")
    assert count_params(small.student) < count_params(small.teacher.net)
    images = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(images), masked(images), atol=1e-4, rtol=1e-4)
    assert deploy_model(small, (3, 48, 48)).module is small.student  # export ships the student, not the teacher


def test_teacher_of_other_classes_is_refused(tmp_path, data_dir):
    teacher_cfg = compose_config(["data=synthetic_awdd_binary", *TINY_DATA, "trainer.max_epochs=1", "train=false",
                                  "test=false"], tmp_path / "teacher", data_dir)
    from hydra.utils import instantiate

    from madd.checkpoint import save_module
    from madd.pipeline import run_config

    module = instantiate(teacher_cfg.model, _convert_="partial")
    path = save_module(module, tmp_path / "binary.ckpt", run_config(teacher_cfg))
    cfg = compose_config(["experiment=distill_awdd", *SMALL, f"model.teacher.path={path}"], tmp_path / "d", data_dir)
    with pytest.raises(MaddConfigError, match="classes"):
        train(cfg)
