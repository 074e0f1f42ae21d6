"""Build callbacks and loggers from their config groups (lightning-hydra-template style)."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from madd.errors import config_error_cause


def instantiate_clear(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a :class:`~madd.errors.MaddConfigError` raised by a constructor comes out
    as itself (Hydra wraps it in an ``InstantiationException``), so ``train.py`` prints its one clear message."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = config_error_cause(err)
        if cause is None:
            raise
        raise cause from None


def _instantiate_group(cfg: DictConfig | None) -> list:
    out = []
    for _, entry in (cfg or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            out.append(instantiate_clear(entry))
    return out


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return _instantiate_group(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list:
    return _instantiate_group(cfg)
