"""Every experiment runs end to end (fast_dev_run: one batch of every stage) with its pretrained default backbone.

Data sizes are shrunk by overrides only; the method, backbone, weights and every other preset value stay the
experiment's own. Real-data experiments need ../shared/data and skip with the reason where it is absent.
"""

from __future__ import annotations

import pytest
import torch
from helpers import CONF, SHARED_DATA, TINY_DATA, TINY_SOURCE, compose_config

from madd.errors import MaddConfigError
from madd.pipeline import train

ONE_BATCH = ["++trainer.limit_train_batches=1", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1"]
#: paper-sized presets whose pretrained weights are not in any registry package: offline they must stop at start
#: with where to put the weights (the registry-weight CPU presets run instead)
NEEDS_CACHED_WEIGHTS = {"unet_backbones"}
EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))


def _tiny(cfg) -> list[str]:
    """Overrides that shrink this experiment's data (synthetic: fewer, smaller images; real: small, unverified)."""
    out = ["data.verify=false", "data.eval_batch_size=8", "data.batch_size=4"]
    if cfg.data.target.get("reader") == "synthetic":  # label budgets stay the experiment's (sweeps derive them)
        out += [o for o in TINY_DATA if not o.startswith(("data.batch_size", "data.eval_batch_size", "data.label"))]
    else:
        out += ["data.image_size=64"]
    if cfg.data.get("source") and cfg.data.source.get("reader") == "synthetic":
        out += TINY_SOURCE
    return out


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, data_dir) -> str:
    """A tiny supervised run's checkpoint, the teacher the distillation experiment asks for."""
    tmp = tmp_path_factory.mktemp("teacher")
    train(compose_config(["experiment=supervised_awdd", *ONE_BATCH, "trainer.max_epochs=1",
                          "trainer.check_val_every_n_epoch=1", *TINY_DATA], tmp,
                         data_dir))
    return str(sorted((tmp / "out" / "checkpoints").glob("*.ckpt"))[0])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run_with_its_pretrained_default(experiment, tmp_path, data_dir, request):
    cfg = compose_config([f"experiment={experiment}"], tmp_path, data_dir)
    reads_shared = "shared_data_dir" in str(cfg.data.target) or "shared_data_dir" in str(cfg.data.get("source"))
    if reads_shared and not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not present at {SHARED_DATA}")
    extra = [f"model.teacher.path={request.getfixturevalue('teacher_ckpt')}"] if "teacher" in cfg.model else []
    # a sweep's single-valued parameters are part of every job it runs (e.g. sweeps/cross_neu_xsdd's data=x_sdd)
    swept = (cfg.hydra.get("sweeper") or {}).get("params") or {}
    fixed = [f"{k}={v}" for k, v in swept.items() if "," not in str(v) and "(" not in str(v)]
    if fixed:
        cfg = compose_config([f"experiment={experiment}", *fixed], tmp_path, data_dir)
    extra += fixed
    # pruning schedules need their epochs: one batch each instead of fast_dev_run's single step; their CPU latency
    # timing (seconds per round and batch size) is left to test_l1_pipeline and the pruning unit tests
    pruners = [k for k in ("l1_pruning", "sfp", "asfp") if ((cfg.get("callbacks") or {}).get(k) or {}).get("_target_")]
    run = [*ONE_BATCH, *(f"callbacks.{k}.latency=false" for k in pruners)] if pruners else ["trainer=debug"]
    cfg = compose_config([f"experiment={experiment}", *run, *_tiny(cfg), *extra], tmp_path, data_dir)
    backbone = cfg.model.get("backbone") or {}
    if backbone and "model.backbone.weights" not in swept:  # a sweep may compare pretrained with scratch per job
        assert backbone.get("weights") not in (None, "null"), f"{experiment} trains from random weights"
    torch.manual_seed(0)
    if experiment in NEEDS_CACHED_WEIGHTS:
        with pytest.raises(MaddConfigError, match="cache"):
            train(cfg)
        return
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
