"""Task wrapper shared by the command-line entry points: clear errors, loggers always closed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from madd.errors import MaddConfigError

log = logging.getLogger("madd")


def run_task(task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """Run ``task(cfg)``; turn a :class:`MaddConfigError` into one clear message; always close W&B.

    ``wandb.finish()`` runs even on failure so multirun jobs do not hang on a crashed run.
    """
    try:
        return task(cfg)
    except MaddConfigError as err:
        log.error("%s", err)
        print(f"\nmadd error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish()

