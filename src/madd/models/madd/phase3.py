"""MADD Phase 3 (Sec. 2.8.2, "Model Optimization"): prune the trained student A, distil it from the teacher.

Declared by MADD (``post_stages``) when ``model.phase3.enabled`` (``cfg`` is that ``phase3`` sub-config), and
usable with any two networks that map raw images to logits::

    small = madd.pipeline.run_stage(cfg, phase3_stage(student, teacher, datamodule, cfg.model.phase3), datamodule)

One ``fit`` of ``rounds * epochs`` epochs (stage ``phase3``, checkpoints in ``<output_dir>/phase3/``):
each round zeroes ``rate`` of the alive filters by L1 norm (Li et al., :class:`L1FilterPruning`) and
then distils ``epochs`` epochs with the pruned filters held at zero (:class:`DistillationModule`: soft
targets at ``temperature`` plus hard labels). The paper gives neither the pruning criterion nor the
distillation loss; these are the standard choices, documented in docs/compression.md, section "Distillation and MADD Phase 3". The report
(Tables II/III shape: parameters, FLOPs, latency, accuracy/mAP/DR/FAR per round) goes to
``<output_dir>/phase3/report.{md,csv}``.

The inputs are not modified (both are copied); the returned network is the physically pruned student,
on the student's device, in eval mode.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from madd.compression.l1_pruning import L1FilterPruning
from madd.errors import MaddConfigError
from madd.models.distillation import DistillationModule
from madd.models.madd import config_sections
from madd.models.stage import Stage

STAGE = "phase3"  # the stage's output folder


def phase3_options(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of ``conf/model/madd.yaml``'s ``phase3`` section (their one home, with a comment each) updated
    with ``cfg`` (``enabled`` is ignored); unknown keys are an error."""
    defaults = {k: v for k, v in config_sections.defaults("phase3").items() if k != "enabled"}
    given = {k: v for k, v in dict(cfg or {}).items() if k != "enabled"}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise MaddConfigError(f"model.phase3 has unknown keys {unknown}; valid keys: {sorted(defaults)}")
    return {**defaults, **given}


def phase3_stage(student: nn.Module, teacher: nn.Module, datamodule: L.LightningDataModule,
                 cfg: Mapping[str, Any] | None = None) -> Stage:
    """The stage that prunes ``student`` in rounds while distilling it from ``teacher``; its result (what
    :func:`madd.pipeline.run_stage` returns) is the physically pruned student, on the student's device, in eval mode.

    Args:
        student, teacher: networks ``images (B, C, H, W) in [0, 1] -> logits (B, num_classes)`` (both copied).
        datamodule: the run's :class:`~madd.data.datamodule.DefectDataModule` (its classes).
        cfg: the phase-3 options (conf/model/madd.yaml's ``phase3`` section; :func:`phase3_options`).
    """
    opts = phase3_options(cfg)
    device = next(student.parameters()).device
    optimizer = opts["optimizer"] or functools.partial(torch.optim.AdamW, lr=opts["lr"], weight_decay=opts["weight_decay"])
    module = DistillationModule(
        copy.deepcopy(student), copy.deepcopy(teacher), opts["temperature"], opts["alpha_kd"], opts["alpha_ce"],
        num_classes=datamodule.num_classes, class_names=datamodule.class_names, normal_index=datamodule.normal_index,
        kd_splits=list(opts["kd_splits"]), augment=opts["augment"], optimizer=optimizer,
    )
    pruners: list[L1FilterPruning] = []

    def pruning(trainer: L.Trainer) -> list[L.Callback]:
        pruners.append(L1FilterPruning(
            rate=opts["rate"], rounds=opts["rounds"], finetune_epochs=opts["epochs"], train_epochs=0,
            module_path="student", scope=opts["scope"], include=opts["include"], exclude=opts["exclude"],
            round_to=opts["round_to"], eval_split=opts["eval_split"], latency=opts["latency"],
            latency_image_size=opts["latency_image_size"],
            report_dir=opts["report_dir"] or str(Path(trainer.default_root_dir) / "phase3"),
        ))
        return pruners[-1:]

    def pruned_student(module: DistillationModule, best: str) -> nn.Module:
        if not pruners or pruners[-1].pruned_network is None:
            raise MaddConfigError("phase 3 ended before its first pruning round; check model.phase3.rounds/epochs")
        return pruners[-1].pruned_network.to(device).eval()

    return Stage(STAGE, module, pruned_student, trainer={"max_epochs": opts["rounds"] * opts["epochs"]},
                 callbacks=pruning)
