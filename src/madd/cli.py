"""Task wrapper shared by the command-line entry points: clear errors, loggers always closed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from madd.errors import MaddConfigError

log = logging.getLogger("madd")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    from madd.reporting.run_record import write_failure

    try:
        output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    except Exception:  # an unresolvable output dir must not mask the real error
        output_dir = None
    if output_dir:
        write_failure(output_dir, err)


def run_task(task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """Run ``task(cfg)``; turn a :class:`MaddConfigError` into one clear message; always close W&B.

    A failure is recorded in ``<output_dir>/metrics.json`` (``status: failed``) for ``report.py``. In a
    multirun the error is re-raised as an ordinary exception, never ``SystemExit``: Hydra's ``run_job`` then
    marks this job failed and the launcher goes on with the other jobs (the basic sweeper raises the first
    failure once the batch is done; the Optuna sweeper records a failed trial, see ``max_failure_rate``).
    ``wandb.finish()`` runs even on failure so multirun jobs do not hang on a crashed run.
    """
    failed = False
    try:
        return task(cfg)
    except MaddConfigError as err:
        failed = True
        log.error("%s", err)
        print(f"\nmadd error: {err}", file=sys.stderr)
        _record_failure(cfg, err)
        if _in_multirun():
            raise
        raise SystemExit(2) from None
    except Exception as err:
        failed = True
        if _in_multirun():  # the job's log file keeps the traceback; the sweep itself goes on
            log.exception("job failed: %s", err)
        _record_failure(cfg, err)
        raise
    except BaseException:  # Ctrl-C: the W&B run is marked failed too
        failed = True
        raise
    finally:
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)
