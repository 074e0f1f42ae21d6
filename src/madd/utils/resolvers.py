"""OmegaConf resolvers used by the configs (registered once, on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def _index_of(items, item):
    # the normal class may be null (every class is a defect type): then there is no normal index
    return None if item is None else list(items).index(item)


def _multirun_hydra():
    """Hydra's runtime config when this process runs a multirun job, else ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return hc if hc.mode == RunMode.MULTIRUN else None


def _run_group(task_name):
    # W&B group: every job of one multirun shares `<task>-<multirun folder>`; a single run is `<task>`
    hc = _multirun_hydra()
    return f"{task_name}-{Path(str(hc.sweep.dir)).name}" if hc is not None else str(task_name)


def _job_name():
    # W&B run name: a multirun job's overrides (`model.loss_weights.delta=0.05,seed=1`) without bookkeeping
    # (paths, callbacks, logger); null lets W&B pick one
    hc = _multirun_hydra()
    if hc is None:
        return None
    keep = [o for o in hc.overrides.task if not o.lstrip("+~").startswith(("paths.", "callbacks.", "logger"))]
    return ",".join(sorted(keep)) or None


def _ensure_dir(path):
    # `${ensure_dir:${paths.log_dir}}`: a folder that must exist before any job runs (the Optuna sweeper opens its
    # SQLite study there before Hydra has created a single output folder; SQLite cannot create folders)
    Path(str(path)).mkdir(parents=True, exist_ok=True)
    return str(path)


def register_resolvers() -> None:
    for name, fn in {"len": lambda x: len(x), "index_of": _index_of, "run_group": _run_group,
                     "job_name": _job_name, "ensure_dir": _ensure_dir}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
