"""Test metrics of the network TIM handed to the joint stage (the best stage-2 checkpoint of a finished run).

A diagnostic for "what does the joint stage add": the main run's test metrics minus these. It is not used for
any selection. ``python -m madd.models.madd.evaluate_tim <run dir> [<run dir> ...]`` reads each run's
``.hydra/config.yaml`` (same data split, same seed) and prints one line per run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from madd.errors import MaddConfigError
from madd.models.madd.tim import STAGE2
from madd.transfer import load_checkpoint_state
from madd.utils.instantiate import instantiate_clear


def best_stage2_checkpoint(run_dir: str | Path) -> Path:
    """The stage-2 checkpoint that initialised the joint stage (``epoch_*.ckpt``; the newest if several)."""
    folder = Path(run_dir) / STAGE2 / "checkpoints"
    best = sorted(p for p in folder.glob("epoch_*.ckpt"))
    if not best:
        raise MaddConfigError(f"no {STAGE2}/checkpoints/epoch_*.ckpt under {run_dir}: is it a finished MADD run "
                              "with model.tim.enabled=true?")
    return best[-1]


def evaluate_tim_stage(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Build the run's data and model from ``cfg``, load the best stage-2 network into it and test it."""
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed))
    datamodule = instantiate_clear(cfg.data, _convert_="all")
    model = instantiate_clear(cfg.model, _convert_="partial")
    state = load_checkpoint_state(best_stage2_checkpoint(run_dir))
    model.load_tim_weights({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}


def main(run_dirs: list[str]) -> None:
    import madd.utils.resolvers  # noqa: F401  (the saved config uses the project's resolvers)

    os.environ.setdefault("PROJECT_ROOT", str(Path.cwd()))
    for run in run_dirs:
        cfg = OmegaConf.load(Path(run) / ".hydra" / "config.yaml")
        cfg.paths.output_dir = str(run)  # the saved value points into Hydra's runtime node
        metrics = evaluate_tim_stage(cfg, run)
        shown = {k: round(100 * metrics[k], 1) for k in ("test/mAP", "test/accuracy", "test/f1") if k in metrics}
        print(f"{run}: TIM stage-2 network {best_stage2_checkpoint(run).name}: {shown}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
