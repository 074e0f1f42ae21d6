"""MADD's config sections (``conf/model/madd.yaml``) with their defaults, merged and checked in one place.

``DEFAULTS`` are the paper's values, what a ``MADDModule`` built in Python without a section gets. A ``train.py``
run passes every key from ``conf/model/madd.yaml``, whose defaults are the pretrained presets' where they differ
(TIM's stages, the views' base augmentation, ``mapom.f_beta``, the pseudo-label view; each commented there).

An unknown key is an error naming ``model.<section>.<key>`` (a typo must not silently train the default).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from madd.errors import MaddConfigError
from madd.models.madd.loss import PAPER_WEIGHTS

DEFAULTS: dict[str, dict[str, Any]] = {
    "adapter": {"enabled": True, "reduction": 4},
    "views": {
        # label-preserving geometric preset (madd.data.augment) applied to target images before the views
        "base_augment": "weak",
        "modality": "ultrasonic",
        "mild": {"brightness": 0.1, "noise_std": 0.02},
        "strong": {"degrees": 15.0, "translate": 0.1, "scale": [0.85, 1.15], "invert_p": 0.5, "noise_p": 0.8},
    },
    "tim": {
        "enabled": True,
        "stage1_ckpt": None,
        "stage1_prefix": None,
        "stage2_ckpt": None,
        "stage1": {"enabled": True, "max_epochs": 5, "lr": None, "coral_weight": 1.0, "augment": "weak", "limit_train_batches": None},
        "stage2": {"max_epochs": 10, "lr": None, "freeze_stages": 3, "augment": "standard",
                   "limit_train_batches": None},
    },
    # source_ce_weight: lambda_s in L_ce = CE(target labelled) + lambda_s CE(source), Eq. 3's labelled risk over
    # D_s u D_t; 0 = Eq. 17 as written (target labels only). pseudo_label_view: the view L_ssl trains (mild =
    # student A, Eq. 12; strong = student B, FixMatch's weak-to-strong); attention_weighting: raw = Eq. 12,
    # normalised = the attention weights divided by their mean over the kept images
    "joint": {"freeze_stages": 0, "source_ce_weight": 0.0, "source_bn": "separate", "pseudo_label_view": "mild",
              "attention_weighting": "raw"},
    "teacher_sync": {"mode": "copy", "every_n_epochs": 5, "ema_decay": 0.99},
    "consistency": {"enabled": True, "mmd_bandwidths": None},
    "rcsm": {
        "enabled": True,
        "mask_ratio": [0.2, 0.3],
        "sim_threshold": 0.5,
        "key_fraction": 0.1,
        "feature_stage": 1,
        "decoder_stage": 2,
        "decoder_widths": [32, 16, 8],
        "prototype_momentum": 0.9,
        "eps": 1.0e-6,
        "map_gate": True,
        "map_blur_sigma": 0.0,
    },
    "mapom": {
        "enabled": True,
        "dynamic_threshold": True,
        "fixed_tau": 0.95,
        "domain_features": True,
        "hidden": 64,
        "temperature": 0.05,
        "f_beta": 1.0,
    },
    "memory_bank": {
        "enabled": True,
        "kind": "domain_adaptive",
        "capacity": 500,
        "kappa": 1.0,
        "plain_threshold": 0.5,
        "min_count": 5,
        "admission_margin": 0.1,
    },
    "loss_weights": dict(PAPER_WEIGHTS),
    "weight_adaptation": {
        "enabled": True,
        "monitor": "val/f1",
        "step": 0.1,
        "tolerance": 0.005,
        "bounds": [0.05, 0.5],
        "supervised": ["alpha"],
        "auxiliary": ["beta", "gamma", "delta", "epsilon"],
    },
    "phase3": {"enabled": False},
}


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


def resolve(section: str, given: Mapping | None) -> dict:
    """``given`` merged over the section's defaults (recursively)."""
    if section == "phase3":  # the options belong to madd.models.madd.phase3, which checks them
        return {**DEFAULTS["phase3"], **dict(given or {})}
    cfg = _merge(section, given, DEFAULTS[section])
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
