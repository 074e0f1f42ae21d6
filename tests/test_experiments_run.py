"""Every experiment runs end to end (fast_dev_run: one batch of every stage) with its pretrained default backbone.

Data sizes are shrunk by overrides only; the method, backbone, weights and every other preset value stay the
experiment's own. Real-data experiments need ../shared/data and skip with the reason where it is absent.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, SHARED_DATA, TINY_DATA, TINY_SOURCE, compose_config

from madd.pipeline import train

EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))


def _tiny(cfg) -> list[str]:
    """Overrides that shrink this experiment's data (synthetic: fewer, smaller images; real: small, unverified)."""
    out = ["data.verify=false", "data.eval_batch_size=8", "data.batch_size=4"]
    if cfg.data.target.get("reader") == "synthetic":
        out += [o for o in TINY_DATA if not o.startswith(("data.batch_size", "data.eval_batch_size"))]
    else:
        out += ["data.image_size=64"]
    if cfg.data.get("source") and cfg.data.source.get("reader") == "synthetic":
        out += TINY_SOURCE
    return out


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, data_dir) -> str:
    """A tiny supervised run's checkpoint, the teacher the distillation experiment asks for."""
    tmp = tmp_path_factory.mktemp("teacher")
    train(compose_config(["experiment=supervised_awdd", "trainer=debug", *TINY_DATA], tmp, data_dir))
    return str(next((tmp / "out" / "checkpoints").glob("*.ckpt")))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run_with_its_pretrained_default(experiment, tmp_path, data_dir, request):
    cfg = compose_config([f"experiment={experiment}"], tmp_path, data_dir)
    reads_shared = "shared_data_dir" in str(cfg.data.target) or "shared_data_dir" in str(cfg.data.get("source"))
    if reads_shared and not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not present at {SHARED_DATA}")
    extra = [f"model.teacher.path={request.getfixturevalue('teacher_ckpt')}"] if "teacher" in cfg.model else []
    cfg = compose_config([f"experiment={experiment}", "trainer=debug", *_tiny(cfg), *extra], tmp_path, data_dir)
    backbone = cfg.model.get("backbone") or {}
    swept = (cfg.hydra.get("sweeper") or {}).get("params") or {}
    if backbone and "model.backbone.weights" not in swept:  # a sweep may compare pretrained with scratch per job
        assert backbone.get("weights") not in (None, "null"), f"{experiment} trains from random weights"
    torch.manual_seed(0)
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
