"""W&B logging, offline and without an account: the run folder holds the logged keys, media, plots, summaries,
config and the checkpoint artifact; a failing task still finishes its run; a multirun shares one group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_DATA, TINY_SOURCE, compose_config
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from madd.models.supervised import SupervisedClassifier


class MapClassifier(SupervisedClassifier):
    """The supervised baseline plus an anomaly map and a ``train/tau`` series, like MADD's."""

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(1, keepdim=True).clamp(0, 1)

    def training_step(self, batch, batch_idx):
        self.log("train/tau", 0.5 + 0.01 * self.current_epoch, batch_size=1)
        return super().training_step(batch, batch_idx)


def wandb_records(run_root: Path) -> list[dict]:
    """Every record of the offline run's ``.wandb`` log, read with W&B's own CLI (``wandb leet inspect``)."""
    files = list(run_root.rglob("*.wandb"))
    assert len(files) == 1, files
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_multirun_jobs_share_one_group(tmp_path, data_dir):
    cfg = compose_config(["experiment=supervised_awdd", "logger=wandb"], tmp_path, data_dir)
    assert cfg.logger.wandb.group == "supervised_awdd" and cfg.logger.wandb.name is None
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = "/logs/supervised_awdd/multiruns/2026-01-02_03-04-05-000006"
        cfg.hydra.overrides.task = ["seed=1", "paths.log_dir=/x", "callbacks.rich_progress_bar=null", "data=a"]
    HydraConfig().set_config(cfg)
    assert cfg.logger.wandb.group == "supervised_awdd-2026-01-02_03-04-05-000006"
    assert cfg.logger.wandb.name == "data=a,seed=1"


def test_offline_run_holds_logged_keys(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [
        "experiment=supervised_awdd", "logger=wandb", "logger.wandb.log_model=true", "tags=[test,wandb]",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
        "callbacks.wandb_media.num_images=2",
        *TINY_DATA, *TINY_SOURCE,
    ]
    cfg = compose_config(overrides, tmp_path, data_dir)
    with open_dict(cfg):
        cfg.model._target_ = f"{__name__}.MapClassifier"
    from madd.cli import run_task
    from madd.pipeline import train

    metrics = run_task(train, cfg)
    import wandb

    assert wandb.run is None  # finished by run_task
    assert "test/mAP" in metrics
    records = wandb_records(Path(cfg.paths.output_dir))
    history = {k for r in records if r["type"] == "history" for k in r["history"]["item"]}
    for key in ("train/loss", "train/tau", "val/mAP", "val/overlay", "val/anomaly_map", "test/mAP",
                "test/pr_curve_table", "test/confusion_matrix_table"):
        assert any(h == key or h.startswith(key) for h in history), (key, sorted(history))
    summary = {k: v for r in records if r["type"] == "summary" for k, v in r["summary"].get("update", {}).items()}
    assert summary["val/mAP_best"] == pytest.approx(max(
        v["val/mAP"] for r in records if r["type"] == "history" for v in [r["history"]["item"]] if "val/mAP" in v))
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_group"] == "supervised_awdd"
    config = {k for r in records if r["type"] in ("config", "run")
              for k in (r[r["type"]].get("update") or r[r["type"]].get("config", {}).get("update") or {})}
    assert {"model", "data", "trainer", "seed"} <= config, config
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert any(a["type"] == "model" for a in artifacts), artifacts
    media = list((Path(cfg.paths.output_dir) / "wandb").rglob("media/images/val/overlay_*.png"))
    assert len(media) >= 4  # 2 images x 2 epochs


def test_failed_task_finishes_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    from madd.cli import run_task

    def task(cfg):
        wandb.init(project="madd-test", dir=str(tmp_path))
        raise RuntimeError("boom")

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "out")}})
    with pytest.raises(RuntimeError, match="boom"):
        run_task(task, cfg)
    assert wandb.run is None
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["status"] == "failed" and "boom" in record["error"]
    exits = [r["exit"] for r in wandb_records(tmp_path) if r["type"] == "exit"]
    assert exits and exits[0].get("exit_code") == 1
