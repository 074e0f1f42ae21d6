"""TIM, the transfer initialisation module (section 2.4; Phase 1 of section 2.8.2), as two small training stages.

* **Stage 1** (:class:`SourcePretraining`, output folder ``tim_stage1_source``): the backbone (ImageNet weights
  when ``model.backbone.weights`` names them) is fine-tuned on the labelled source images with cross-entropy
  plus the CORAL loss of Eq. 6 between the pooled source features and the pooled features of the unlabelled
  target images: ``L = L_ce(source) + lambda_da · ||Cov(f_s) - Cov(f_t)||_F^2 / (4 d^2)``. Source labels are
  already mapped into the target classes by the data module (``data.label_mapping``).
* **Stage 2** (:class:`TargetAdaptation`, ``tim_stage2_target``): the domain-adaptive adapter (Eq. 5) is
  inserted after the last backbone stage; the stem and the first ``freeze_stages - 1`` stages are frozen; the
  adapter, the top stages and the head are fine-tuned on the labelled target images with cross-entropy.

The stage-1 backbone reaches stage 2 through :func:`madd.transfer.transfer_backbone` (backbone-only); the
stage-1 head is kept only when its class set equals the target's. ``model.tim.stage1_ckpt`` skips stage 1 and
takes the backbone of any checkpoint instead (a ``model=supervised model.train_split=source`` run, a torchvision
``.pth``, ...). The stage-2 network then initialises the teacher and both students. ``model.tim.stage2_ckpt``
skips both stages and takes the stage-2 network of a finished run (the loss weights of Eq. 17 act only in the
joint stage, so a sensitivity sweep can share one TIM per seed).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from madd.checkpoint import load_file
from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.losses import coral_loss
from madd.models.backbone_transfer import load_checkpoint_state, tensor_state, transfer_backbone
from madd.models.base import DefectModule
from madd.models.class_weights import ClassWeights
from madd.models.classifier import ImageClassifier
from madd.models.madd.distributed import gather_rows
from madd.models.madd.networks import MADDNet
from madd.models.stage import Stage

log = logging.getLogger(__name__)

STAGE1, STAGE2 = "tim_stage1_source", "tim_stage2_target"


class SourcePretraining(DefectModule):
    """TIM stage 1: ``L = L_ce(source) + coral_weight · L_da(f_source, f_target)`` (Eq. 6 on pooled features).

    Keys ``net.backbone.*``/``net.head.*`` as in :class:`~madd.models.supervised.SupervisedClassifier`, so
    either's checkpoint can serve as ``model.tim.stage1_ckpt``. Target images enter only through their
    features (no target label is used). Under DDP the CORAL statistics are computed on all ranks' features.
    """

    def __init__(self, backbone, num_classes: int, coral_weight: float = 1.0, augment: str = "weak",
                 class_names: Sequence[str] | None = None, normal_index: int | None = None, optimizer=None,
                 scheduler=None, class_weights: str | Sequence[float] | None = None) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.net = ImageClassifier(backbone, num_classes)
        self.augment = build_augmentation(augment)
        self.coral_weight = coral_weight
        self.ce_weights = ClassWeights(class_weights, num_classes, "source")

    def train_splits(self) -> list[str]:
        return ["source", "target_unlabeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        xs, ys = batch["source"]["image"], batch["source"]["label"]
        xt = batch["target_unlabeled"]["image"]
        with torch.no_grad():
            views = self.augment(torch.cat([xs, xt]))
        f_s, f_t = self.net.features(views).split([len(xs), len(xt)])
        logits = self.net.head(f_s)
        ce = F.cross_entropy(logits, ys, weight=self.ce_weights.weight)
        loss = ce
        logs = {"train/loss_ce": ce, "train/accuracy": (logits.argmax(1) == ys).float().mean()}
        if self.coral_weight > 0:
            da = coral_loss(gather_rows(self, f_s, True), gather_rows(self, f_t, True))
            loss = loss + self.coral_weight * da
            logs["train/loss_da"] = da
        self.log_dict({"train/loss": loss, **logs}, prog_bar=True, batch_size=len(xs))
        return loss


class TargetAdaptation(DefectModule):
    """TIM stage 2: cross-entropy on the labelled target images for the adapter, the unfrozen top stages and
    the head of a :class:`~madd.models.madd.torch_model.MADDNet` (keys ``net.*``)."""

    def __init__(self, net: MADDNet, num_classes: int, freeze_stages: int = 3, augment: str = "standard",
                 class_names: Sequence[str] | None = None, normal_index: int | None = None, optimizer=None,
                 scheduler=None, class_weights: str | Sequence[float] | None = None) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.net.requires_grad_(True)
        self.net.backbone.freeze(freeze_stages)
        self.augment = build_augmentation(augment)
        self.ce_weights = ClassWeights(class_weights, num_classes)

    def train_splits(self) -> list[str]:
        return ["target_labeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        b = batch["target_labeled"]
        with torch.no_grad():
            images = self.augment(b["image"])
        logits = self(images)
        loss = F.cross_entropy(logits, b["label"], weight=self.ce_weights.weight)
        self.log_dict({"train/loss": loss, "train/loss_ce": loss,
                       "train/accuracy": (logits.argmax(1) == b["label"]).float().mean()},
                      prog_bar=True, batch_size=len(images))
        return loss


# ------------------------------------------------------------------------------------------ orchestration
def _stage_factories(madd, epochs: int, lr: float | None):
    opt = madd.optimizer_factory
    if opt is None:
        raise MaddConfigError("model.optimizer is not set; pick one with model/optimizer=adamw|adam|sgd")
    if lr is not None:
        opt = functools.partial(opt, lr=lr)
    sched = None
    if madd.scheduler_factory is not None:  # the main schedule's T_max is the main run's length: use the stage's
        sched = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=max(1, epochs))
    return opt, sched


def _trainer_overrides(name: str, stage_cfg: Mapping) -> dict:
    epochs = int(stage_cfg["max_epochs"])
    if epochs < 1:
        raise MaddConfigError(f"model.tim.{'stage1' if name == STAGE1 else 'stage2'}.max_epochs={epochs} must be "
                              ">= 1 (set model.tim.enabled=false to skip TIM)")
    overrides = {"max_epochs": epochs, "min_epochs": 1}
    if stage_cfg["limit_train_batches"] is not None:  # else the main trainer's setting
        overrides["limit_train_batches"] = stage_cfg["limit_train_batches"]
    return overrides


def _result(module: DefectModule, best: str) -> tuple[dict, str]:
    """A fitted stage's tensors: its best checkpoint's, else its last weights."""
    if best:
        return load_checkpoint_state(best), best
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, ""


def _stage1_checkpoint(path: str, class_names: Sequence[str]) -> tuple[dict, bool]:
    """The tensors of a given stage-1 checkpoint and whether its head fits the target classes."""
    raw = load_file(path)
    state = tensor_state(raw, path)
    # a plain state dict has no class list: backbone only
    names = (raw.get("hyper_parameters") or {}).get("class_names") if isinstance(raw, Mapping) else None
    return state, names is not None and list(names) == list(class_names)


def _copy_head(state: dict, net: MADDNet, prefix: str = "net.head.") -> bool:
    w, b = state.get(prefix + "weight"), state.get(prefix + "bias")
    if w is None or b is None or w.shape != net.head.weight.shape:
        return False
    net.head.load_state_dict({"weight": w, "bias": b})
    return True


def best_stage2_checkpoint(run_dir: str | Path) -> Path:
    """The stage-2 checkpoint that initialised the joint stage (the stage keeps its best one, ``epoch_*.ckpt``)."""
    best = sorted((Path(run_dir) / STAGE2 / "checkpoints").glob("epoch_*.ckpt"))
    if not best:
        raise MaddConfigError(f"no {STAGE2}/checkpoints/epoch_*.ckpt under {run_dir}: is it a finished MADD run "
                              "with model.tim.enabled=true?")
    return best[-1]


def _network_state(stage2_state: dict) -> dict:
    """A stage-2 module's ``net.*`` tensors, keyed as the MADD networks (teacher, students) name them."""
    return {k[len("net."):]: v for k, v in stage2_state.items() if k.startswith("net.")}


def load_stage2_network(madd, path: str | Path) -> Path:
    """Initialise ``madd``'s teacher and students from a stage-2 checkpoint, or from the best one of a run folder.

    Returns the checkpoint file used. Raises :class:`MaddConfigError` naming ``model.tim.stage2_ckpt`` when the
    file does not hold a network of this model's shape (another backbone, adapter setting or class count).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MaddConfigError(f"model.tim.stage2_ckpt={path} does not exist: give the folder of a finished MADD run "
                              f"or its {STAGE2}/checkpoints/epoch_*.ckpt")
    file = best_stage2_checkpoint(path) if path.is_dir() else path
    try:
        madd.model.load_networks(_network_state(load_checkpoint_state(file)))
    except RuntimeError as err:
        raise MaddConfigError(f"model.tim.stage2_ckpt={file} does not fit this model "
                              f"({str(err).splitlines()[0]} ...): give a {STAGE2} checkpoint (or run folder) of a "
                              "MADD run with the same backbone, adapter and classes") from None
    return file


def tim_stages(madd) -> Iterator[Stage]:
    """Phase 1 for ``madd`` (a :class:`~madd.models.madd.MADDModule`) as the stages the pipeline runs; each
    stage's ``finish`` hands its network on (stage 1's backbone to stage 2, stage 2's network to the teacher and
    both students) and records what happened in ``madd.tim_summary`` (plain types)."""
    cfg = madd.tim_cfg
    summary = madd.tim_summary = {}
    if cfg["stage2_ckpt"]:
        file = load_stage2_network(madd, cfg["stage2_ckpt"])
        log.info("TIM skipped: teacher and students start from the stage-2 network %s", file)
        summary["stage2"] = {"checkpoint": str(file), "trained": False}
        return
    student_a = madd.model.student_a
    s1 = cfg["stage1"]
    if not s1["enabled"] and not cfg["stage1_ckpt"]:
        # the pretrained (ImageNet) backbone goes straight to stage 2, without source pre-training (the pretrained
        # presets' default; stage 1 on against off has not been measured yet: docs/methods/madd.md, section "Presets
        # and sizes")
        state, head_fits, prefix_map = student_a.state_dict(), False, {"backbone.": "backbone."}
        summary["stage1"] = {"checkpoint": None, "trained": False}
    elif cfg["stage1_ckpt"]:
        state, head_fits = _stage1_checkpoint(cfg["stage1_ckpt"], madd.class_names)
        summary["stage1"] = {"checkpoint": str(cfg["stage1_ckpt"]), "trained": False}
        prefix_map = {cfg["stage1_prefix"]: "backbone."} if cfg["stage1_prefix"] is not None else None
    else:
        opt, sched = _stage_factories(madd, s1["max_epochs"], s1["lr"])
        stage1 = SourcePretraining(copy.deepcopy(student_a.backbone), madd.num_classes, s1["coral_weight"],
                                   s1["augment"], madd.class_names, madd.normal_index, opt, sched,
                                   madd.model.ce_weights.spec)
        fitted: dict = {}
        yield Stage(STAGE1, stage1, lambda module, best: fitted.update(zip(("state", "best"), _result(module, best))),
                    trainer=_trainer_overrides(STAGE1, s1))
        state, head_fits, prefix_map = fitted["state"], True, {"net.backbone.": "backbone."}
        summary["stage1"] = {"checkpoint": fitted["best"], "trained": True}

    net = copy.deepcopy(student_a)
    report = transfer_backbone(state, net, prefix_map=prefix_map)
    head_copied = head_fits and _copy_head(state, net)
    log.info("TIM stage 1 -> 2: %s; head %s", report.summary(), "kept" if head_copied else "re-initialised")
    summary["transfer"] = {"transferred": len(report.transferred), "mismatched": len(report.mismatched),
                           "missing": len(report.missing), "head_kept": head_copied}

    s2 = cfg["stage2"]
    opt, sched = _stage_factories(madd, s2["max_epochs"], s2["lr"])
    stage2 = TargetAdaptation(net, madd.num_classes, s2["freeze_stages"], s2["augment"], madd.class_names,
                              madd.normal_index, opt, sched, madd.model.ce_weights.spec)

    def hand_on(module: DefectModule, best: str) -> None:
        state2, best2 = _result(module, best)
        summary["stage2"] = {"checkpoint": best2, "trained": True}
        madd.model.load_networks(_network_state(state2))

    yield Stage(STAGE2, stage2, hand_on, trainer=_trainer_overrides(STAGE2, s2))
