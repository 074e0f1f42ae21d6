"""MADD as a LightningModule: it declares Phase 1 (TIM, ``stages``) and Phase 3 (``post_stages``), which the
pipeline runs, and fits Phase 2 (Eq. 17). :class:`~madd.models.madd.torch_model.MADDModel` (``self.model``) computes;
this module holds the hooks, the optimisation, the logging, Eq. 13's validation cache and the checkpoint state."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import torch

from madd.errors import MaddConfigError
from madd.models.base import DefectModule
from madd.models.madd import config_sections, phase3
from madd.models.madd.box_localization import BoxAP, boxes_from_anomaly_map, target_boxes
from madd.models.madd.callbacks import LossWeightAdapter, TeacherSync
from madd.models.madd.distributed import gather_rows
from madd.models.madd.loss import WEIGHT_NAMES
from madd.models.madd.networks import MADDNet
from madd.models.madd.torch_model import MADDModel, StepOutput
from madd.models.madd.transfer_init import tim_stages
from madd.models.stage import Stage

log = logging.getLogger(__name__)


class MADDModule(DefectModule):
    """Args (each section is documented in ``conf/model/madd.yaml`` and :mod:`madd.models.madd.config_sections`):
        backbone: a :class:`~madd.models.backbones.Backbone`; copied into student A, the teacher and (when
            ``share_students=false``) student B.
        share_students, eval_network, dropout, class_weights, head: see :class:`MADDModel`.
        adapter, views, tim, joint, teacher_sync, consistency, rcsm, mapom, memory_bank, loss_weights,
        weight_adaptation, phase3: config sections.
    """

    def __init__(
        self,
        backbone,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        optimizer=None,
        scheduler=None,
        pixel_threshold: float = 0.5,
        share_students: bool = True,
        eval_network: str = "student_a",
        dropout: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        head: Mapping | None = None,
        **sections: Mapping | None,
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        if eval_network not in ("student_a", "teacher"):
            raise MaddConfigError(f"model.eval_network={eval_network!r}: choose student_a or teacher")
        unknown = sorted(set(sections) - set(config_sections.SECTIONS))
        if unknown:
            raise MaddConfigError(f"model.{unknown[0]} is not a MADD setting; valid sections: "
                                  f"{list(config_sections.SECTIONS)}")
        self.cfg = cfg = {name: config_sections.resolve(name, sections.get(name)) for name in config_sections.SECTIONS}
        self.tim_cfg = cfg["tim"]
        self.model = MADDModel(backbone, num_classes, normal_index, cfg, share_students, eval_network, dropout,
                               class_weights, head)
        self.register_buffer("last_val_f1", torch.tensor(-1.0))  # -1: no validation seen yet (LossWeightAdapter)
        self.tau_history: list[float] = []  # mean tau of every finished epoch
        self.val_cache: dict[str, torch.Tensor] = {}  # the teacher on the labelled validation split (Eq. 13)
        self._val_rows: dict[str, list[torch.Tensor]] = {}
        self._tau_sum, self._tau_count = 0.0, 0
        self.statistics_rows: dict[str, int] = {}  # rows the cross-rank statistics saw in the last step
        self.tim_summary: dict = {}
        self.test_boxes = BoxAP()

    # ====================================================================== structure (the callbacks' interface)
    @property
    def student_a(self) -> MADDNet:
        return self.model.student_a

    @property
    def teacher(self) -> MADDNet:
        return self.model.teacher

    def train_splits(self) -> list[str]:
        return ["target_labeled", "target_unlabeled", "source"]

    def configure_callbacks(self):
        sync, adapt = self.cfg["teacher_sync"], self.cfg["weight_adaptation"]
        callbacks = [TeacherSync(sync["every_n_epochs"], sync["mode"], sync["ema_decay"], sync["warmup"])]
        if adapt["enabled"]:
            callbacks.append(LossWeightAdapter(adapt["monitor"], adapt["step"], adapt["tolerance"],
                                               tuple(adapt["bounds"]), tuple(adapt["supervised"]),
                                               tuple(adapt["auxiliary"])))
        return callbacks

    def weights(self) -> dict[str, float]:
        return self.model.weights()

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.model.set_weights(weights)

    def sync_teacher(self) -> None:
        self.model.sync_teacher()

    def ema_teacher(self, decay: float) -> None:
        self.model.ema_teacher(decay)

    # ====================================================================== phases 1 and 3: declared stages
    def stages(self) -> Iterator[Stage]:
        """Phase 1 (TIM), unless ``model.tim.enabled=false``."""
        if self.cfg["phase3"]["enabled"]:
            phase3.phase3_options(self.cfg["phase3"])  # a bad option fails before hours of training, not after
        if not self.tim_cfg["enabled"]:
            log.info("TIM skipped (model.tim.enabled=false)")
            return
        yield from tim_stages(self)

    def post_stages(self) -> Iterator[Stage]:
        """Phase 3 (``model.phase3.enabled``): prune student A while distilling it from the teacher; the pruned
        student replaces student A and is the network evaluated and exported."""
        if not self.cfg["phase3"]["enabled"]:
            return
        stage = phase3.phase3_stage(self.model.student_a, self.model.teacher, self.trainer.datamodule,
                                    self.cfg["phase3"])
        pruned = stage.finish
        stage.finish = lambda module, best: self.model.use_pruned_student(pruned(module, best))
        yield stage

    # ====================================================================== inference
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor | None:
        return self.model.evaluate(images).anomaly_map

    def eval_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.model.evaluate(images)
        return out.logits, out.anomaly_map

    # ====================================================================== Phase 2: the joint training step
    def _gather(self, x: torch.Tensor, grads: bool = False) -> torch.Tensor:
        return gather_rows(self, x, grads)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model.step(batch, self.val_cache, self._gather)
        self.statistics_rows = out.rows
        self._tau_sum, self._tau_count = self._tau_sum + float(out.pseudo.tau), self._tau_count + 1
        self._log_step(out, batch)
        return out.loss

    def _log_step(self, out: StepOutput, batch: dict) -> None:
        bs = len(batch["target_labeled"]["image"]) + len(batch["target_unlabeled"]["image"])
        pseudo = out.pseudo
        # per step (the finite-loss guard names the culprit) and per epoch (the epoch means loggers keep)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs, on_step=True, on_epoch=True)
        values = {f"train/loss_{k}": v for k, v in out.terms.items()}
        values.update({f"train/weight/{k}": v for k, v in zip(WEIGHT_NAMES, self.model.loss_weights)})
        values.update({"train/tau": pseudo.tau, "train/threshold_pass_rate": pseudo.passed.float().mean(),
                       "train/acceptance_rate": pseudo.keep.float().mean(),
                       "train/teacher_syncs": self.model.teacher_syncs.float()})
        values.update(out.logs)
        self.log_dict(values, batch_size=bs, on_step=True, on_epoch=True)
        n, hidden, keep = int(pseudo.keep.sum()), batch["target_unlabeled"]["label"], pseudo.keep
        if n:  # diagnostic from the hidden labels of target_unlabeled (never trained on)
            self.log("train/pseudo_precision", (pseudo.labels[keep] == hidden[keep]).float().mean(), batch_size=n,
                     on_step=False, on_epoch=True)
        if self.model.bank_on:
            counts = self.model.bank.class_counts()
            self.log_dict({f"train/bank_fill/{name.replace(' ', '_')}": counts[i].float()
                           for i, name in enumerate(self.class_names)}, batch_size=bs, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self._tau_count:
            self.tau_history.append(self._tau_sum / self._tau_count)
        self._tau_sum, self._tau_count = 0.0, 0

    # ====================================================================== validation: Eq. 13's data
    def on_train_start(self) -> None:
        # Lightning keeps each submodule's mode; a freshly built (e.g. resumed) module has a training teacher
        self.model.teacher.eval()
        dm = getattr(self.trainer, "datamodule", None)
        if self.model.dynamic_tau and not self.val_cache and dm is not None:
            self.val_cache = self.meta_validation_cache(dm.val_dataloader())

    @torch.no_grad()
    def meta_validation_cache(self, batches) -> dict[str, torch.Tensor]:
        """Eq. 13's data over ``batches`` of the labelled validation split, in evaluation mode (before the first
        validation of a fit; each validation then refreshes it)."""
        was_training = self.training
        self.eval()
        rows = []
        for batch in batches:
            batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            out = self.model.evaluate(batch["image"])
            rows.append(self.model.meta_validation_rows(batch["image"], batch["label"], out.rec_error))
        self.train(was_training)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]} if rows else {}

    def on_validation_epoch_start(self) -> None:
        self._val_rows = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model.evaluate(batch["image"])
        self._eval_step(batch, "val", (out.logits, out.anomaly_map))
        if self.model.dynamic_tau:
            for k, v in self.model.meta_validation_rows(batch["image"], batch["label"], out.rec_error).items():
                self._val_rows.setdefault(k, []).append(v)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._val_rows:
            self.val_cache = {k: self._gather(torch.cat(v)) for k, v in self._val_rows.items()}
        self._val_rows = {}

    # ====================================================================== test: box-level AP from the maps
    def test_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model.evaluate(batch["image"])
        self._eval_step(batch, "test", (out.logits, out.anomaly_map))
        keep = batch["has_mask"]
        if out.anomaly_map is None or not keep.any():
            return
        idx = keep.nonzero().flatten().tolist()
        preds = boxes_from_anomaly_map(out.anomaly_map[keep], self.pixel_threshold, out.logits.argmax(1)[keep],
                                       out.defect_prob[keep], self.normal_index)
        self.test_boxes.update(preds, target_boxes([batch["boxes"][i] for i in idx]))

    def on_test_epoch_end(self) -> None:
        for k, v in self.test_boxes.compute().items():
            self.log(f"test/{k}", v, sync_dist=True)
        self.test_boxes.reset()
        super().on_test_epoch_end()

    # ====================================================================== checkpoints (weights_only-safe)
    def upgrade_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint of the earlier layout (networks, bank and buffers at the top, before ``self.model``) in
        this layout: each such key gets the ``model.`` prefix; a current checkpoint is returned as is."""
        inner = {n for n, _ in self.model.named_children()} | {n for n, _ in self.model.named_buffers(recurse=False)}
        return {(f"model.{k}" if k.split(".", 1)[0] in inner else k): v for k, v in state.items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["madd_state"] = {"tau_history": [float(t) for t in self.tau_history],
                                    "val_cache": {k: v.detach().cpu() for k, v in self.val_cache.items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.upgrade_state_dict(checkpoint.get("state_dict") or {})
        state = checkpoint.get("madd_state") or {}
        self.tau_history = list(state.get("tau_history", []))
        self.val_cache = {k: v.to(self.device) for k, v in (state.get("val_cache") or {}).items()}
