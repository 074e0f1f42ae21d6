"""Build callbacks and loggers from their config groups (lightning-hydra-template style)."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig


def _instantiate_group(cfg: DictConfig | None) -> list:
    out = []
    for _, entry in (cfg or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            out.append(instantiate(entry))
    return out


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return _instantiate_group(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list:
    return _instantiate_group(cfg)
