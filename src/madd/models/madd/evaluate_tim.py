"""Test metrics of the network TIM handed to the joint stage (the best stage-2 checkpoint of a finished run).

A diagnostic for "what does the joint stage add": the main run's test metrics minus these. It is not used for
any selection. ``python -m madd.models.madd.evaluate_tim <run dir> [<run dir> ...]`` rebuilds each run from the
resolved config its ``checkpoints/last.ckpt`` stores (same data split, same seed) and prints one line per run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from madd.checkpoint import build_module, read_checkpoint
from madd.errors import MaddConfigError
from madd.models.madd.transfer_init import best_stage2_checkpoint, load_stage2_network
from madd.utils.instantiate import instantiate_clear


def evaluate_tim_stage(config: Mapping[str, Any], run_dir: str | Path) -> dict[str, float]:
    """Build the run's data and model from its resolved ``config``, load the best stage-2 network and test it."""
    if config.get("seed") is not None:
        L.seed_everything(int(config["seed"]))
    datamodule = instantiate_clear(config["data"], _convert_="all")
    model = build_module(config)
    load_stage2_network(model, run_dir)
    trainer = L.Trainer(accelerator=config.get("trainer", {}).get("accelerator", "auto"), devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}


def main(run_dirs: list[str]) -> None:
    for run in run_dirs:
        config = read_checkpoint(Path(run) / "checkpoints" / "last.ckpt").get("madd_config")
        if not config:
            raise MaddConfigError(f"{run}/checkpoints/last.ckpt stores no run config; is it a train.py run?")
        metrics = evaluate_tim_stage(config, run)
        shown = {k: round(100 * metrics[k], 1) for k in ("test/mAP", "test/accuracy", "test/f1") if k in metrics}
        print(f"{run}: TIM stage-2 network {best_stage2_checkpoint(run).name}: {shown}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
