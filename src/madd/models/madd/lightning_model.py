"""MADD (meta-adaptive defect detection) as one LightningModule: Phase 1 (TIM) in ``run_stages``, Phase 2 (joint
training of MV-TSN + RCSM + MAPOM, Eq. 17) in ``training_step``, Phase 3 (pruning + distillation) in
``run_post_stages`` when ``model.phase3.enabled``.

One training step (section 2.8.2), on a batch of labelled target, unlabelled target and source images:

1. Views: a label-preserving geometric preset (``views.base_augment``) on the target images, then the mild
   view for student A (labelled, unlabelled and source images) and the strong view for student B
   (unlabelled images). The teacher sees the un-viewed images (no gradient, evaluation mode).
2. RCSM: defect-guided masks of the target images from student A's stage features and the source defect
   prototype; student A's backbone on ``x ⊙ (1 - M)``; the decoder reconstructs ``x`` (Eq. 9); the anomaly
   attention map ``A`` (Eq. 11).
3. MAPOM: ``z`` from the teacher's source and unlabelled features and the reconstruction errors;
   ``tau = 0.5 + 0.4 sigmoid(g(z))`` (Eq. 14); pseudo-labels = teacher classes with confidence ``>= tau``,
   purified by the memory bank (Eq. 15).
4. Losses (Eq. 17) and updates: bank admissions (confidence ``> tau + 0.1``), defect prototype.

Which network predicts: ``forward`` runs **student A** by default (``eval_network``), the network Phase 3
prunes and exports; ``eval_network=teacher`` evaluates the teacher instead. The anomaly map is always student
A's reconstruction-error map (the decoder is trained on student A's features).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.backbone_transfer import load_checkpoint_state
from madd.models.base import DefectModule
from madd.models.class_weights import ClassWeights
from madd.models.ema import copy_weights, ema_update
from madd.models.madd import phase3, settings
from madd.models.madd.distributed import gather_rows
from madd.models.madd.localization import BoxAP, boxes_from_anomaly_map, target_boxes
from madd.models.madd.loss import (
    WEIGHT_NAMES,
    AttentionWeightedPseudoLabelLoss,
    DomainAlignmentLoss,
    FeatureConsistencyLoss,
    MADDTotalLoss,
    MemoryConsistencyLoss,
    MetaF1Loss,
    PredictionConsistencyLoss,
    ReconstructionLoss,
)
from madd.models.madd.mapom import META_FEATURES, MetaLearner, meta_features
from madd.models.madd.memory_bank import MemoryBank
from madd.models.madd.rcsm import (
    DefectGuidedMasker,
    DefectPrototype,
    anomaly_attention,
    defect_cells,
    masked_input,
)
from madd.models.madd.torch_model import MADDNet, NetOutput, ReconstructionDecoder, stage_stride
from madd.models.madd.views import build_mild_view, build_strong_view

log = logging.getLogger(__name__)


@contextmanager
def frozen_bn_statistics(module: nn.Module):
    """BatchNorm normalises with batch statistics but does not move its running statistics (momentum 0):
    auxiliary passes (masked images, strong views of a shared student) must not shift the statistics the
    evaluation uses."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class MADDModule(DefectModule):
    """Args (each section is documented in ``conf/model/madd.yaml`` and :mod:`madd.models.madd.settings`):
        backbone: a :class:`~madd.models.backbones.Backbone`; copied into student A, the teacher and (when
            ``share_students=false``) student B.
        share_students: students A and B share backbone, adapter and head (default; the paper's "the three
            networks share a common backbone and adapter": the views differ, the weights do not). ``false``
            gives student B its own copy, trained by the consistency losses only.
        eval_network: ``student_a`` (default) or ``teacher``: the network behind ``forward``.
        adapter, views, tim, joint, teacher_sync, consistency, rcsm, mapom, memory_bank, loss_weights,
        weight_adaptation, phase3: config sections.
        head: ``model/head`` (pooled stages, zero-initialised head) of the three networks.
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
        adapter: Mapping | None = None,
        views: Mapping | None = None,
        tim: Mapping | None = None,
        joint: Mapping | None = None,
        teacher_sync: Mapping | None = None,
        consistency: Mapping | None = None,
        rcsm: Mapping | None = None,
        mapom: Mapping | None = None,
        memory_bank: Mapping | None = None,
        loss_weights: Mapping | None = None,
        weight_adaptation: Mapping | None = None,
        phase3: Mapping | None = None,
        class_weights: str | Sequence[float] | None = None,
        head: Mapping | None = None,
    ) -> None:
        super().__init__(num_classes, class_names, normal_index, optimizer, scheduler, pixel_threshold)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        if eval_network not in ("student_a", "teacher"):
            raise MaddConfigError(f"model.eval_network={eval_network!r}: choose student_a or teacher")
        cfg = {name: settings.resolve(name, given) for name, given in [
            ("adapter", adapter), ("views", views), ("tim", tim), ("joint", joint), ("teacher_sync", teacher_sync),
            ("consistency", consistency), ("rcsm", rcsm), ("mapom", mapom), ("memory_bank", memory_bank),
            ("loss_weights", loss_weights), ("weight_adaptation", weight_adaptation), ("phase3", phase3)]}
        self.cfg = cfg
        self.tim_cfg = cfg["tim"]
        self.share_students, self.eval_network = share_students, eval_network
        w = cfg["loss_weights"]
        mp = cfg["mapom"]

        # ------------------------------------------------------------------ which parts are on
        self.rcsm_on = bool(cfg["rcsm"]["enabled"]) and w["delta"] > 0
        self.cons_on = bool(cfg["consistency"]["enabled"]) and w["gamma"] > 0
        self.ssl_on_strong = cfg["joint"]["pseudo_label_view"] == "strong" and w["beta"] > 0
        self.strong_pass = self.cons_on or self.ssl_on_strong  # student B on the strong view
        self.dynamic_tau = bool(mp["enabled"]) and bool(mp["dynamic_threshold"])
        self.bank_on = bool(mp["enabled"]) and bool(cfg["memory_bank"]["enabled"])
        if self.dynamic_tau and w["eta"] <= 0:
            raise MaddConfigError("model.loss_weights.eta=0 leaves the meta-learner untrained; for a fixed "
                                  "threshold set model.mapom.dynamic_threshold=false (threshold model.mapom.fixed_tau)")
        if cfg["rcsm"]["enabled"] and w["delta"] <= 0:
            log.warning("model.loss_weights.delta=0 switches the RCSM off (no reconstruction, no anomaly map)")

        # ------------------------------------------------------------------ networks (section 2.5)
        ad = cfg["adapter"]
        self.student_a = MADDNet(backbone, num_classes, ad["enabled"], ad["reduction"], dropout, **(head or {}))
        self.student_b_net = copy.deepcopy(self.student_a) if not share_students else None
        self.teacher = copy.deepcopy(self.student_a)
        self.teacher.requires_grad_(False)  # no gradients: receives student A's weights (callback)
        self.teacher.eval()
        self._apply_joint_freeze()

        v = cfg["views"]
        self.base_augment = build_augmentation(v["base_augment"])
        self.mild_view = build_mild_view(**v["mild"])
        st = dict(v["strong"])
        st["scale"] = tuple(st["scale"])
        self.strong_view = build_strong_view(v["modality"], **st)

        # ------------------------------------------------------------------ RCSM (section 2.6)
        rc = cfg["rcsm"]
        backbone_channels = self.student_a.backbone.stage_channels
        self.feature_stage, self.decoder_stage = int(rc["feature_stage"]), int(rc["decoder_stage"])
        if self.rcsm_on:
            self.masker = DefectGuidedMasker(tuple(rc["mask_ratio"]), rc["sim_threshold"], rc["key_fraction"])
            self.prototype = DefectPrototype(backbone_channels[self.feature_stage], rc["prototype_momentum"])
            self.decoder = ReconstructionDecoder(backbone_channels[self.decoder_stage],
                                                 stage_stride(self.decoder_stage),
                                                 widths=tuple(int(w) for w in rc["decoder_widths"]))

        # ------------------------------------------------------------------ MAPOM (section 2.7)
        if self.dynamic_tau:
            self.meta_learner = MetaLearner(len(META_FEATURES), mp["hidden"])
        mb = cfg["memory_bank"]
        if self.bank_on:
            self.bank = MemoryBank(self.student_a.feature_dim, num_classes, mb["capacity"], mb["kind"], mb["kappa"],
                                   mb["plain_threshold"], mb["min_count"])

        # ------------------------------------------------------------------ losses (Eq. 17)
        self.loss_ssl = AttentionWeightedPseudoLabelLoss(cfg["joint"]["attention_weighting"] == "normalised")
        self.loss_cons_p = PredictionConsistencyLoss()
        self.loss_cons_f = FeatureConsistencyLoss(cfg["consistency"]["mmd_bandwidths"])
        self.loss_rec = ReconstructionLoss()
        self.loss_da = DomainAlignmentLoss()
        self.loss_mem = MemoryConsistencyLoss()
        self.loss_meta = MetaF1Loss(mp["temperature"], mp["f_beta"])
        self.loss_total = MADDTotalLoss()

        # ------------------------------------------------------------------ adaptive state (all in checkpoints)
        self.register_buffer("loss_weights", torch.tensor([float(w[k]) for k in WEIGHT_NAMES]))
        # cross-entropy class weights (target labels, source labels): derived from the data at fit start
        self.ce_weights = ClassWeights(class_weights, num_classes)
        self.source_ce_weights = ClassWeights(class_weights, num_classes, "source")
        self.register_buffer("last_val_f1", torch.tensor(-1.0))  # -1: no validation seen yet
        self.register_buffer("teacher_syncs", torch.zeros((), dtype=torch.long))
        self.register_buffer("tau_prev", torch.tensor(0.7 if self.dynamic_tau else float(mp["fixed_tau"])))
        self.tau_history: list[float] = []  # mean tau of every finished epoch
        self.val_cache: dict[str, torch.Tensor] = {}  # teacher on the labelled validation split (Eq. 13)
        self._val_parts: dict[str, list[torch.Tensor]] = {}
        self._tau_sum, self._tau_count = 0.0, 0
        self._eval_stash: dict = {}
        self.statistics_rows: dict[str, int] = {}
        self.test_boxes = BoxAP()

    # ====================================================================== structure
    @property
    def student_b(self) -> MADDNet:
        return self.student_a if self.student_b_net is None else self.student_b_net

    @property
    def eval_net(self) -> MADDNet:
        return self.teacher if self.eval_network == "teacher" else self.student_a

    def train_splits(self) -> list[str]:
        return ["target_labeled", "target_unlabeled", "source"]

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # pseudo-labels from running statistics, never batch statistics
        return self

    def _apply_joint_freeze(self) -> None:
        for net in (self.student_a, self.student_b_net):
            if net is not None:
                net.requires_grad_(True)
                net.backbone.freeze(int(self.cfg["joint"]["freeze_stages"]))

    def configure_callbacks(self):
        from madd.callbacks.loss_weights import LossWeightAdapter
        from madd.callbacks.teacher_sync import TeacherSync

        ts = self.cfg["teacher_sync"]
        callbacks = [TeacherSync(ts["every_n_epochs"], ts["mode"], ts["ema_decay"])]
        wa = self.cfg["weight_adaptation"]
        if wa["enabled"]:
            callbacks.append(LossWeightAdapter(wa["monitor"], wa["step"], wa["tolerance"], tuple(wa["bounds"]),
                                               tuple(wa["supervised"]), tuple(wa["auxiliary"])))
        return callbacks

    # ====================================================================== state shared with the callbacks
    def weights(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(WEIGHT_NAMES, self.loss_weights.tolist())}

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.loss_weights.copy_(torch.tensor([float(weights[k]) for k in WEIGHT_NAMES]))

    @torch.no_grad()
    def sync_teacher(self) -> None:
        """Teacher <- student A (section 2.5: every 5 epochs)."""
        copy_weights(self.teacher, self.student_a)
        self.teacher_syncs += 1

    @torch.no_grad()
    def ema_teacher(self, decay: float) -> None:
        ema_update(self.teacher, self.student_a, decay)
        self.teacher_syncs += 1

    def load_tim_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Phase 1's result initialises the teacher and both students (decoder, meta-learner, bank stay fresh)."""
        for net in (self.student_a, self.student_b_net, self.teacher):
            if net is not None:
                net.load_state_dict(state)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._apply_joint_freeze()

    # ====================================================================== phases 1 and 3
    def run_stages(self, datamodule, build_trainer) -> None:
        """Phase 1 (TIM), unless disabled or a main-fit checkpoint is being resumed (it holds the weights)."""
        if self.cfg["phase3"]["enabled"]:
            phase3.phase3_options(self.cfg["phase3"])  # a bad option fails before hours of training, not after
        resuming = bool((self.run_config or {}).get("ckpt_path"))
        if not self.tim_cfg["enabled"] or resuming:
            log.info("TIM skipped (%s)", "resuming from ckpt_path" if resuming else "model.tim.enabled=false")
            return
        from madd.models.madd.tim import run_tim

        self.tim_summary = run_tim(self, datamodule, build_trainer)

    def run_post_stages(self, datamodule, build_trainer, best_ckpt: str | None = None) -> bool:
        """Phase 3: prune student A and distil it from the teacher. Returns whether the weights changed (then the
        test must use the current weights, not the best checkpoint of the joint training)."""
        if not self.cfg["phase3"]["enabled"]:
            return False
        if best_ckpt:
            self.load_state_dict(load_checkpoint_state(best_ckpt))
        self.student_a = phase3.run_phase3(self.student_a, self.teacher, datamodule, build_trainer, self.cfg["phase3"])
        self.eval_network = "student_a"
        return True

    # ====================================================================== inference
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.eval_net.forward_features(images)
        if not self.training:
            self._eval_stash = {"images": images, "out": out}
        return out.logits

    def _stashed(self, images: torch.Tensor):
        st = self._eval_stash
        if st.get("images") is images and self.eval_network == "student_a":
            return st["out"]
        return self.student_a.forward_features(images)

    def _reconstruct(self, images: torch.Tensor, stage_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 9 on the defect-guided mask: returns ``(x_hat, mask)``."""
        mask = self.masker(stage_features.detach(), self.prototype.prototype, images, self.prototype.initialized)
        feats = self.student_a.forward_until(masked_input(images, mask), self.decoder_stage)
        return self.decoder(feats, tuple(images.shape[-2:])), mask

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor | None:
        """Eq. 11's map of student A's masked reconstruction, in [0, 1] at input size.

        With ``rcsm.map_gate`` (default) it is multiplied by the image's defect probability ``1 - p(normal)``, so
        images classified normal get a faint map (Eq. 11 alone scales every image's maximum to 1); optional
        Gaussian smoothing with ``rcsm.map_blur_sigma`` pixels.
        """
        if not self.rcsm_on:
            return None
        out = self._stashed(images)
        rec, _ = self._reconstruct(images, out.stages[self.feature_stage])
        amap, err = anomaly_attention(rec, images, self.cfg["rcsm"]["eps"])
        sigma = float(self.cfg["rcsm"]["map_blur_sigma"])
        if sigma > 0:
            k = 2 * int(3 * sigma) + 1
            amap = kornia.filters.gaussian_blur2d(amap, (k, k), (sigma, sigma))
        probs = out.logits.softmax(1)
        defect_prob = 1 - probs[:, self.normal_index] if self.normal_index is not None else torch.ones_like(probs[:, 0])
        if self.cfg["rcsm"]["map_gate"]:
            amap = amap * defect_prob.view(-1, 1, 1, 1)
        if not self.training:
            self._eval_stash.update(amap=amap, rec_error=err.flatten(1).mean(1), defect_prob=defect_prob)
        return amap.clamp(0, 1)

    # ====================================================================== Phase 2: one joint training step
    def _gather(self, x: torch.Tensor, grads: bool = False) -> torch.Tensor:
        return gather_rows(self, x, grads)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        lab, unl, src = batch["target_labeled"], batch["target_unlabeled"], batch["source"]
        xl, yl, xu, xs = lab["image"], lab["label"], unl["image"], src["image"]
        nl, nu, ns = len(xl), len(xu), len(xs)
        w = dict(zip(WEIGHT_NAMES, self.loss_weights))
        terms: dict[str, torch.Tensor] = {}
        logs: dict[str, torch.Tensor | float] = {}

        # 1. views (no gradient) and the teacher
        with torch.no_grad():
            xt = self.base_augment(torch.cat([xl, xu]))  # geometric, label-preserving
            view_a = self.mild_view(torch.cat([xt, xs]))
            view_b = self.strong_view(xt[nl:]) if self.strong_pass else None
            t_out = self.teacher.forward_features(torch.cat([xt[nl:], xs]))
            t_probs_u, t_probs_s = t_out.logits.float().softmax(1).split([nu, ns])
            t_feat_u, t_feat_s = t_out.features.split([nu, ns])
        out_a = self._student_a_pass(view_a, ns)
        logits_l, logits_u, logits_s = out_a.logits.split([nl, nu, ns])
        f_l, f_u, f_s = out_a.features.split([nl, nu, ns])
        terms["ce"] = F.cross_entropy(logits_l, yl, weight=self.ce_weights.weight)
        lambda_s = float(self.cfg["joint"]["source_ce_weight"])
        if lambda_s > 0:  # Eq. 3's labelled risk also covers the (label-mapped) source images
            ce_source = F.cross_entropy(logits_s, src["label"], weight=self.source_ce_weights.weight)
            logs["train/loss_ce_source"] = ce_source
            terms["ce"] = terms["ce"] + lambda_s * ce_source

        # 2. RCSM: masked reconstruction of the target images, anomaly attention (Eqs. 9-11)
        # (labelled defect images are skipped: Eq. 10 trains on normal images, Eq. 12 weights unlabelled ones)
        attention_u, rec_err_u = None, torch.zeros(nu, device=xl.device)
        if self.rcsm_on:
            self._update_prototype(out_a.stages[self.feature_stage][nl + nu:], src)
            normal_l = (yl == self.normal_index if self.normal_index is not None
                        else torch.ones_like(yl, dtype=torch.bool))
            rec_idx = torch.cat([normal_l.nonzero().flatten(), torch.arange(nl, nl + nu, device=xl.device)])
            x_rec = xt[rec_idx]
            with frozen_bn_statistics(self.student_a):
                rec, mask = self._reconstruct(x_rec, out_a.stages[self.feature_stage][rec_idx])
            attention, err = anomaly_attention(rec, x_rec, self.cfg["rcsm"]["eps"])
            n_ln = len(rec_idx) - nu
            attention_u, rec_err_u = attention[n_ln:], err[n_ln:].detach().flatten(1).mean(1)
            logs["train/mask_ratio"] = mask.mean()

        # 3. MAPOM: threshold (Eq. 14), pseudo-labels, purification (Eq. 15)
        g_tfs, g_tps = self._gather(t_feat_s), self._gather(t_probs_s)
        conf, pseudo = t_probs_u.max(1)
        if self.dynamic_tau:
            z = meta_features(g_tfs, g_tps, self._gather(t_feat_u), self._gather(t_probs_u),
                              self._gather(rec_err_u), self.tau_prev, self.cfg["mapom"]["domain_features"])
            tau = self.meta_learner.tau(z.to(self.loss_weights)).detach()
        else:
            tau = self.tau_prev.new_tensor(float(self.cfg["mapom"]["fixed_tau"]))
        passed = conf >= tau
        keep = passed
        f_u_det = f_u.detach().float()
        if self.bank_on:
            clean, sim = self.bank.purify(f_u_det, pseudo)
            keep = passed & clean
            if passed.any():
                logs["train/bank_similarity"] = sim[passed].mean()

        # 4. the remaining loss terms
        if self.strong_pass:
            with frozen_bn_statistics(self.student_b) if self.share_students else _null():
                out_b = self.student_b.forward_features(view_b)
        if w["beta"] > 0:  # Eq. 12 on student A's mild view, or (pseudo_label_view=strong) on the strong view
            ssl_logits = out_b.logits if self.ssl_on_strong else logits_u
            terms["ssl"] = self.loss_ssl(ssl_logits, pseudo, keep, attention_u, self.ce_weights.weight)
        if self.cons_on:
            terms["cons_p"] = self.loss_cons_p(logits_u, out_b.logits)
            terms["cons_f"] = self.loss_cons_f(self._gather(f_u, True), self._gather(out_b.features, True))
        if self.rcsm_on:
            normal_u = keep & (pseudo == self.normal_index) if self.normal_index is not None else keep
            is_normal = torch.cat([torch.ones(n_ln, dtype=torch.bool, device=xl.device), normal_u])
            terms["rec"] = self.loss_rec(rec, x_rec, is_normal)
            logs["train/rec_normal_images"] = is_normal.float().sum()
        if w["epsilon"] > 0:
            g_fs, g_ft = self._gather(f_s, True), self._gather(torch.cat([f_l, f_u]), True)
            terms["da"] = self.loss_da(g_fs, g_ft)
            self.statistics_rows.update(da_source=len(g_fs), da_target=len(g_ft))  # diagnostics (DDP test)
        if self.bank_on and w["zeta"] > 0:
            means, has = self.bank.class_means(pseudo)
            terms["mem"] = self.loss_mem(f_u, means, keep & has)
        if self.dynamic_tau:
            terms["meta"], tau_val = self._meta_loss(g_tfs, g_tps)
            if tau_val is not None:
                logs["train/tau_val"] = tau_val
        loss = self.loss_total(terms, w)

        # 5. updates that depend on this step's decisions (no gradient)
        if self.bank_on:
            admit = keep & (conf > tau + float(self.cfg["memory_bank"]["admission_margin"]))
            self.statistics_rows["bank_admitted_here"] = int(admit.sum())
            g_admit = self._gather(admit.long()).bool()  # every rank adds the same rows in the same order
            self.bank.add(self._gather(f_u_det)[g_admit], self._gather(pseudo)[g_admit],
                          self._gather(unl["index"])[g_admit])
        self.tau_prev.copy_(tau)
        self._tau_sum, self._tau_count = self._tau_sum + float(tau), self._tau_count + 1

        self._log_step(loss, terms, logs, tau, passed, keep, pseudo, unl["label"], nl, nu)
        return loss

    def _student_a_pass(self, views: torch.Tensor, n_source: int) -> NetOutput:
        """Student A on ``[target views; source views]``. With ``joint.source_bn=separate`` the source rows get their
        own pass, normalised by their own batch statistics without moving the running statistics (domain-specific
        batch normalisation, as in AdaBN/DSBN): BatchNorm's running statistics, which evaluation uses, stay
        target-domain, and the target rows are not normalised by a batch half made of another domain.
        ``shared``: one pass over both, as a plain network would."""
        if self.cfg["joint"]["source_bn"] == "shared" or n_source == 0:
            return self.student_a.forward_features(views)
        target = self.student_a.forward_features(views[:-n_source])
        with frozen_bn_statistics(self.student_a):
            source = self.student_a.forward_features(views[-n_source:])
        return NetOutput(torch.cat([target.logits, source.logits]), torch.cat([target.features, source.features]),
                         [torch.cat(pair) for pair in zip(target.stages, source.stages)])

    def _meta_loss(self, f_src: torch.Tensor, p_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 13 on the cached teacher outputs of the validation split; only the meta-learner gets gradients."""
        c = self.val_cache
        if not c or len(c["confidence"]) < 2:
            return 0.0 * self.meta_learner(torch.zeros(len(META_FEATURES), device=self.device)), None
        z_val = meta_features(f_src, p_src, c["features"], c["probs"], c["rec_error"], self.tau_prev,
                              self.cfg["mapom"]["domain_features"])
        tau_val = self.meta_learner.tau(z_val.to(self.loss_weights))
        return self.loss_meta(c["confidence"], c["correct"], tau_val), tau_val.detach()

    def _update_prototype(self, source_stage: torch.Tensor, src: dict) -> None:
        cells = defect_cells(src["label"], src["mask"], tuple(source_stage.shape[-2:]), self.normal_index,
                             src.get("boxes"))
        s, n = DefectPrototype.batch_sum(source_stage.detach().float(), cells)
        if self._trainer is not None and self.trainer.world_size > 1:
            s, n = self._gather(s.unsqueeze(0)).sum(0), self._gather(n.view(1)).sum()
        self.prototype.update(s, n)

    def _log_step(self, loss, terms, logs, tau, passed, keep, pseudo, hidden, nl, nu) -> None:
        bs = nl + nu
        # per step (the finite-loss guard names the culprit) and per epoch (the epoch means loggers keep)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, on_step=True, on_epoch=True)
        values = {f"train/loss_{k}": v for k, v in terms.items()}
        values.update({f"train/weight/{k}": v for k, v in zip(WEIGHT_NAMES, self.loss_weights)})
        values.update({"train/tau": tau, "train/threshold_pass_rate": passed.float().mean(),
                       "train/acceptance_rate": keep.float().mean(), "train/teacher_syncs": self.teacher_syncs.float()})
        values.update(logs)
        self.log_dict(values, batch_size=bs, on_step=True, on_epoch=True)
        n = int(keep.sum())
        if n:  # diagnostic from the hidden labels of target_unlabeled (never trained on)
            self.log("train/pseudo_precision", (pseudo[keep] == hidden[keep]).float().mean(), batch_size=n,
                     on_step=False, on_epoch=True)
        if self.bank_on:
            counts = self.bank.class_counts()
            self.log_dict({f"train/bank_fill/{name.replace(' ', '_')}": counts[i].float()
                           for i, name in enumerate(self.class_names)}, batch_size=bs, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self._tau_count:
            self.tau_history.append(self._tau_sum / self._tau_count)
        self._tau_sum, self._tau_count = 0.0, 0

    # ====================================================================== validation: the meta-learner's data
    def on_train_start(self) -> None:
        # Lightning keeps each submodule's mode; a freshly built (e.g. resumed) module has a training teacher
        self.teacher.eval()
        if self.dynamic_tau and not self.val_cache:
            self._build_val_cache_now()

    @torch.no_grad()
    def _build_val_cache_now(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        was_training = self.training
        self.eval()
        self._val_parts = {}
        for batch in dm.val_dataloader():
            batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            self(batch["image"])
            self.anomaly_map(batch["image"])
            self._collect_val_cache(batch)
        self.val_cache = {k: torch.cat(v) for k, v in self._val_parts.items()}
        self._val_parts = {}
        self.train(was_training)

    @torch.no_grad()
    def _collect_val_cache(self, batch: dict) -> None:
        if not self.dynamic_tau:
            return
        images = batch["image"]
        t = self.teacher.forward_features(images)
        probs = t.logits.float().softmax(1)
        conf, pred = probs.max(1)
        st = self._eval_stash
        rec = st["rec_error"] if st.get("images") is images and "rec_error" in st else torch.zeros_like(conf)
        for k, v in {"features": t.features.float(), "probs": probs, "confidence": conf,
                     "correct": (pred == batch["label"]).float(), "rec_error": rec.float()}.items():
            self._val_parts.setdefault(k, []).append(v)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._collect_val_cache(batch)

    def on_validation_epoch_start(self) -> None:
        self._val_parts = {}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._val_parts:
            self.val_cache = {k: self._gather(torch.cat(v)) for k, v in self._val_parts.items()}
        self._val_parts = {}

    # ====================================================================== test: box-level AP from the maps
    def test_step(self, batch: dict, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        st = self._eval_stash
        keep = batch["has_mask"]
        if "amap" not in st or st.get("images") is not batch["image"] or not keep.any():
            return
        pred = st["out"].logits.argmax(1)
        idx = keep.nonzero().flatten().tolist()
        preds = boxes_from_anomaly_map(st["amap"][keep], self.pixel_threshold, pred[keep], st["defect_prob"][keep],
                                       self.normal_index)
        self.test_boxes.update(preds, target_boxes([batch["boxes"][i] for i in idx]))

    def on_test_epoch_end(self) -> None:
        for k, v in self.test_boxes.compute().items():
            self.log(f"test/{k}", v, sync_dist=True)
        self.test_boxes.reset()
        super().on_test_epoch_end()

    # ====================================================================== checkpoints (weights_only-safe)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["madd_state"] = {
            "tau_history": [float(t) for t in self.tau_history],
            "val_cache": {k: v.detach().cpu() for k, v in self.val_cache.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("madd_state") or {}
        self.tau_history = list(state.get("tau_history", []))
        self.val_cache = {k: v.to(self.device) for k, v in (state.get("val_cache") or {}).items()}


@contextmanager
def _null():
    yield
