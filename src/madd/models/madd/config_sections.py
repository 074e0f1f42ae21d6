"""MADD's config sections (``conf/model/madd.yaml``) with their defaults, merged and checked in one place.

The defaults have one home, ``conf/model/madd.yaml``: :func:`defaults` reads its 12 method sections
(:data:`SECTIONS`: ``adapter`` ... ``phase3``) with OmegaConf, once per file, and :func:`resolve` merges a section's
given keys over them and checks the result. A ``train.py`` run passes every key of that file already; a
``MADDModule`` built in Python without a section gets the same values, the pretrained presets' (the paper's own
values, where they differ, are named in the YAML's comments: TIM's stages, the views' base augmentation,
``joint.pseudo_label_view``/``attention_weighting``, ``teacher_sync.mode``, ``mapom.f_beta``). Nothing else of the
file is read (``defaults:``, ``_target_``, ``optimizer``, ``num_classes`` ... are Hydra's or the constructor's).

The file is looked up as the ``madd`` command looks up its config folder (:func:`madd.utils.config_dir.find_config_dir`:
``$MADD_CONFIG_DIR``, ``./conf``, the checkout's ``conf/``), the first folder holding ``model/madd.yaml``.

A value that is an interpolation (``views.modality: ${data.modality}``) or ``???`` refers to the composed Hydra
config, so it has no value here: it is a required key (:class:`Required`), and leaving it out is an error naming
``model.<section>.<key>`` and what to pass. An unknown key is an error naming ``model.<section>.<key>`` too (a
typo must not silently train the default).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from madd.errors import MaddConfigError
from madd.models.madd.industrial_views import MODALITIES
from madd.utils.config_dir import config_dir_candidates, find_config_dir

#: the method sections of conf/model/madd.yaml, the only part of the file read here
SECTIONS = ("adapter", "views", "tim", "joint", "teacher_sync", "consistency", "rcsm", "mapom", "memory_bank",
            "loss_weights", "weight_adaptation", "phase3")
#: where the defaults live, relative to the config folder
MODEL_CONFIG = Path("model") / "madd.yaml"


@dataclass(frozen=True)
class Required:
    """A default only Hydra can fill: the YAML's interpolation (``${data.modality}``) or ``???``, kept as written."""

    expression: str

    def __repr__(self) -> str:
        return f"<required: {self.expression}>"


def config_file() -> Path:
    """``model/madd.yaml`` of the first config folder holding it (search order: :mod:`madd.utils.config_dir`)."""
    folder = find_config_dir(MODEL_CONFIG.as_posix())
    if folder is None:
        tried = ", ".join(str(c) for c in config_dir_candidates())
        raise MaddConfigError(f"MADD's defaults live in conf/{MODEL_CONFIG.as_posix()}; no config folder holds it "
                              f"(tried {tried}). Run from the repository's folder, install it with `pip install -e .`, "
                              "or set MADD_CONFIG_DIR")
    return folder / MODEL_CONFIG


@functools.cache
def _load(path: str) -> dict[str, dict[str, Any]]:
    """The method sections of the YAML file at ``path`` as plain dicts (read once per path)."""
    cfg = OmegaConf.load(path)
    absent = [name for name in SECTIONS if not isinstance(cfg.get(name), DictConfig)]
    if absent:
        raise MaddConfigError(f"{path} has no section(s) {absent}; MADD's defaults need all of {list(SECTIONS)}")
    return {name: _plain(cfg[name]) for name in SECTIONS}


def _plain(node) -> dict[str, Any]:
    """A DictConfig as a dict; interpolated or missing values become :class:`Required` (never resolved here)."""
    raw = OmegaConf.to_container(node, resolve=False)
    out: dict[str, Any] = {}
    for key in node:
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            out[str(key)] = Required(str(raw[key]))
        elif isinstance(node[key], DictConfig):
            out[str(key)] = _plain(node[key])
        elif isinstance(node[key], ListConfig) and _unresolved(node[key]):
            out[str(key)] = Required(str(raw[key]))
        else:
            out[str(key)] = raw[key]
    return out


def _unresolved(node) -> bool:
    """Whether a ListConfig holds an interpolation or ``???`` anywhere."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node)
    for key in keys:
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            return True
        if isinstance(node[key], (DictConfig, ListConfig)) and _unresolved(node[key]):
            return True
    return False


def defaults(section: str) -> dict[str, Any]:
    """A fresh copy of ``section``'s defaults from conf/model/madd.yaml (required keys as :class:`Required`)."""
    if section not in SECTIONS:
        raise MaddConfigError(f"{section!r} is not a MADD config section; choose from {list(SECTIONS)}")
    return copy.deepcopy(_load(str(config_file()))[section])


def _merge(path: str, given: Mapping | None, default: Mapping) -> dict:
    out = copy.deepcopy(dict(default))
    for key, value in (given or {}).items():
        if key not in default:
            raise MaddConfigError(f"model.{path}.{key} is not a MADD setting; valid keys: {sorted(default)}")
        if isinstance(default[key], Mapping):
            out[key] = _merge(f"{path}.{key}", value, default[key])
        else:
            out[key] = value
    return out


def _missing(path: str, cfg: Mapping) -> list[tuple[str, Required]]:
    """The dotted paths (below ``path``) still holding a :class:`Required` after the merge."""
    out = []
    for key, value in cfg.items():
        if isinstance(value, Required):
            out.append((f"{path}.{key}", value))
        elif isinstance(value, Mapping):
            out += _missing(f"{path}.{key}", value)
    return out


def _check_required(section: str, cfg: Mapping) -> None:
    missing = _missing(section, cfg)
    if not missing:
        return
    path, value = missing[0]
    keys = path.split(".")[1:]
    example = "..."
    for key in reversed(keys):
        example = f"{{{key!r}: {example}}}"
    ref = re.fullmatch(r"\$\{([\w.]+)\}", value.expression)
    notes = [f"the composed config's {ref.group(1)}"] if ref else []
    if path == "views.modality":

        example = example.replace("...", "'ultrasonic'")
        notes.append(f"one of {list(MODALITIES)}")
    source = f" ({'; '.join(notes)})" if notes else ""
    others = f"; also required: {[f'model.{p}' for p, _ in missing[1:]]}" if missing[1:] else ""
    raise MaddConfigError(f"model.{path} has no default outside Hydra: conf/{MODEL_CONFIG.as_posix()} sets it to "
                          f"{value.expression}{source}. Pass it, e.g. MADDModule(..., {section}={example}){others}")


def resolve(section: str, given: Mapping | None) -> dict:
    """``given`` merged over the section's defaults (:func:`defaults`, recursively), checked."""
    if section == "phase3":  # the options belong to madd.models.madd.phase3, which checks them
        cfg = {**defaults("phase3"), **dict(given or {})}
        _check_required(section, cfg)
        return cfg
    cfg = _merge(section, given, defaults(section))
    _check_required(section, cfg)
    if section == "loss_weights":
        for k, v in cfg.items():
            if v is None or not math.isfinite(float(v)) or float(v) < 0:
                raise MaddConfigError(f"model.loss_weights.{k}={v} must be a finite number >= 0 "
                                      "(0 switches the term off)")
    if section == "teacher_sync" and cfg["mode"] not in ("copy", "ema"):
        raise MaddConfigError(f"model.teacher_sync.mode={cfg['mode']!r}: choose copy (every n epochs) or ema")
    if section == "teacher_sync" and int(cfg["every_n_epochs"]) < 1:
        raise MaddConfigError(f"model.teacher_sync.every_n_epochs={cfg['every_n_epochs']} must be >= 1")
    if section == "joint" and cfg["source_bn"] not in ("separate", "shared"):
        raise MaddConfigError(f"model.joint.source_bn={cfg['source_bn']!r}: choose separate (source images "
                              "normalised by their own batch statistics) or shared")
    if section == "joint" and cfg["pseudo_label_view"] not in ("mild", "strong"):
        raise MaddConfigError(f"model.joint.pseudo_label_view={cfg['pseudo_label_view']!r}: choose mild (student A, "
                              "Eq. 12) or strong (student B's strong view, as FixMatch)")
    if section == "joint" and cfg["attention_weighting"] not in ("raw", "normalised"):
        raise MaddConfigError(f"model.joint.attention_weighting={cfg['attention_weighting']!r}: choose raw (Eq. 12) "
                              "or normalised")
    if section == "mapom" and not 0.0 < float(cfg["fixed_tau"]) <= 1.0:
        raise MaddConfigError(f"model.mapom.fixed_tau={cfg['fixed_tau']} must be in (0, 1]")
    if section == "rcsm" and not {cfg["feature_stage"], cfg["decoder_stage"]} <= {0, 1, 2, 3}:
        raise MaddConfigError("model.rcsm.feature_stage and model.rcsm.decoder_stage are backbone stage indices 0-3")
    if section == "weight_adaptation":
        lo, hi = cfg["bounds"]
        if not 0 <= lo <= hi:
            raise MaddConfigError(f"model.weight_adaptation.bounds={list(cfg['bounds'])} must be [low, high] "
                                  "with 0 <= low <= high")
    return cfg
