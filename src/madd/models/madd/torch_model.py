"""MADD's computation as one ``nn.Module`` (anomalib's split: this module computes; the LightningModule
:class:`~madd.models.madd.lightning_model.MADDModule` runs the hooks, optimises, logs and checkpoints).

:meth:`MADDModel.step` is one joint training step (Phase 2, section 2.8.2) on a batch of labelled target,
unlabelled target and source images; it returns every loss term. Each equation is assembled in one method:

==========  ===============================================================  =========================
equations   what                                                             method
==========  ===============================================================  =========================
3, 17       labelled cross-entropy (target, optionally + lambda_s source)    ``labelled_loss``
9-11        defect-guided masked reconstruction, anomaly attention map A     ``reconstruct``
14, 15      threshold tau from the meta-features, pseudo-labels, the bank    ``pseudo_labels``
13          the meta-learner's soft-F1 loss on the validation cache          ``meta_loss``
6-8, 10,    the remaining terms (L_ssl, L_cons-p, L_cons-f, L_rec, L_da,     ``step``
12, 16, 17  L_mem) and their weighted sum
==========  ===============================================================  =========================

One step:

1. Views: a label-preserving geometric preset (``views.base_augment``) on the target images, then the mild
   view for student A (labelled, unlabelled and source images) and the strong view for student B
   (unlabelled images). The teacher sees the un-viewed images (no gradient, evaluation mode).
2. RCSM: defect-guided masks of the target images from student A's stage features and the source defect
   prototype; student A's backbone on ``x ⊙ (1 - M)``; the decoder reconstructs ``x`` (Eq. 9); the anomaly
   attention map ``A`` (Eq. 11).
3. MAPOM: ``z`` from the teacher's source and unlabelled features and the reconstruction errors;
   ``tau = 0.5 + 0.4 sigmoid(g(z))`` (Eq. 14); pseudo-labels = teacher classes with confidence ``>= tau``,
   purified by the memory bank (Eq. 15).
4. Losses (Eq. 17) and updates: bank admissions (confidence ``> tau + admission_margin``), defect prototype.

Which network predicts: :meth:`MADDModel.forward` runs **student A** by default (``eval_network``), the network
Phase 3 prunes and exports; ``eval_network=teacher`` evaluates the teacher instead. The anomaly map is always
student A's reconstruction-error map (the decoder is trained on student A's features).

Cross-rank statistics (CORAL, MMD, the meta-features, the bank) go through ``gather``: the LightningModule passes
its all-gather; the default is the identity of one process.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from madd.data.augment import build_augmentation
from madd.errors import MaddConfigError
from madd.models.class_weights import ClassWeights
from madd.models.ema import copy_weights, ema_update
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
from madd.models.madd.meta_threshold import META_FEATURES, MetaLearner, meta_features
from madd.models.madd.memory_bank import MemoryBank
from madd.models.madd.networks import (
    MADDNet,
    NetOutput,
    ReconstructionDecoder,
    frozen_bn_statistics,
    stage_stride,
)
from madd.models.madd.reconstruction_masks import DefectGuidedMasker, DefectPrototype, anomaly_attention, defect_cells, masked_input
from madd.models.madd.industrial_views import build_mild_view, build_strong_view

log = logging.getLogger(__name__)

#: ``gather(rows, keep_graph) -> rows of every rank``
Gather = Callable[..., torch.Tensor]


def local_rows(x: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
    """The one-process ``gather``: the rows themselves."""
    return x


@dataclass
class Reconstruction:
    """Eqs. 9-11 on the target images the step reconstructs: the normal labelled ones, then every unlabelled one."""

    images: torch.Tensor  # (n, C, H, W) the (geometrically viewed) inputs x
    output: torch.Tensor  # x_hat
    attention: torch.Tensor  # A, Eq. 11, (n, 1, H, W)
    error: torch.Tensor  # |x_hat - x| per pixel, (n, 1, H, W)
    mask: torch.Tensor  # M, the defect-guided mask
    n_labelled: int  # the first n_labelled rows are labelled normal images


@dataclass
class PseudoLabels:
    """Eqs. 14-15 on the unlabelled images: the teacher's classes, the threshold and what is kept."""

    confidence: torch.Tensor  # (nu,) the teacher's top probability
    labels: torch.Tensor  # (nu,) the teacher's class
    tau: torch.Tensor  # 0-d threshold
    passed: torch.Tensor  # (nu,) confidence >= tau
    keep: torch.Tensor  # (nu,) passed and clean in the memory bank (Eq. 15)


@dataclass
class StepOutput:
    """What :meth:`MADDModel.step` returns: the total loss, each unweighted term, and the step's diagnostics."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    pseudo: PseudoLabels
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)  # train/<name> diagnostics
    rows: dict[str, int] = field(default_factory=dict)  # rows the cross-rank statistics saw (DDP diagnostics)


@dataclass
class EvalOutput:
    """One evaluation pass: the eval network's logits, student A's anomaly map (``None`` with the RCSM off), the
    image's defect probability ``1 - p(normal)`` and its mean reconstruction error (MAPOM's validation feature)."""

    logits: torch.Tensor
    anomaly_map: torch.Tensor | None
    defect_prob: torch.Tensor
    rec_error: torch.Tensor


class MADDModel(nn.Module):
    """The teacher, students A and B, the views, the RCSM, MAPOM, the memory bank and every loss of Eq. 17.

    Args:
        backbone: a :class:`~madd.models.backbones.Backbone`, copied into student A, the teacher and (when
            ``share_students=false``) student B.
        num_classes, normal_index: the data's.
        cfg: the resolved config sections (:func:`madd.models.madd.config_sections.resolve`).
        share_students: students A and B share backbone, adapter and head (the paper's "the three networks share a
            common backbone and adapter": the views differ, the weights do not); ``False`` gives student B its own
            copy, trained by the consistency losses only.
        eval_network: ``student_a`` or ``teacher``, the network behind :meth:`forward`.
        class_weights: ``model.class_weights`` (target, source and pseudo-label cross-entropies).
        head: ``model/head`` of the three networks.
    """

    #: :func:`madd.checkpoint.fit_pruned_shapes` fits each network inside (Phase 3 prunes student A only)
    holds_networks = True

    def __init__(self, backbone, num_classes: int, normal_index: int | None, cfg: Mapping[str, Mapping],
                 share_students: bool = True, eval_network: str = "student_a", dropout: float = 0.0,
                 class_weights=None, head: Mapping | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.normal_index, self.share_students, self.eval_network = normal_index, share_students, eval_network
        weights, mapom = cfg["loss_weights"], cfg["mapom"]
        # which parts are on
        self.rcsm_on = bool(cfg["rcsm"]["enabled"]) and weights["delta"] > 0
        self.cons_on = bool(cfg["consistency"]["enabled"]) and weights["gamma"] > 0
        self.ssl_on_strong = cfg["joint"]["pseudo_label_view"] == "strong" and weights["beta"] > 0
        self.strong_pass = self.cons_on or self.ssl_on_strong  # student B on the strong view
        self.dynamic_tau = bool(mapom["enabled"]) and bool(mapom["dynamic_threshold"])
        self.bank_on = bool(mapom["enabled"]) and bool(cfg["memory_bank"]["enabled"])
        if self.dynamic_tau and weights["eta"] <= 0:
            raise MaddConfigError("model.loss_weights.eta=0 leaves the meta-learner untrained; for a fixed "
                                  "threshold set model.mapom.dynamic_threshold=false (threshold model.mapom.fixed_tau)")
        if cfg["rcsm"]["enabled"] and weights["delta"] <= 0:
            log.warning("model.loss_weights.delta=0 switches the RCSM off (no reconstruction, no anomaly map)")

        # networks (section 2.5)
        adapter = cfg["adapter"]
        self.student_a = MADDNet(backbone, num_classes, adapter["enabled"], adapter["reduction"], dropout,
                                 **(head or {}))
        self.student_b_net = copy.deepcopy(self.student_a) if not share_students else None
        self.teacher = copy.deepcopy(self.student_a)
        self.teacher.requires_grad_(False)  # no gradients: follows student A (copy or EMA)
        self.teacher.eval()
        self.apply_joint_freeze()

        views = cfg["views"]
        self.base_augment = build_augmentation(views["base_augment"])
        self.mild_view = build_mild_view(**views["mild"])
        strong = dict(views["strong"])
        strong["scale"] = tuple(strong["scale"])
        self.strong_view = build_strong_view(views["modality"], **strong)

        # RCSM (section 2.6)
        rcsm = cfg["rcsm"]
        channels = self.student_a.backbone.stage_channels
        self.feature_stage, self.decoder_stage = int(rcsm["feature_stage"]), int(rcsm["decoder_stage"])
        if self.rcsm_on:
            self.masker = DefectGuidedMasker(tuple(rcsm["mask_ratio"]), rcsm["sim_threshold"], rcsm["key_fraction"])
            self.prototype = DefectPrototype(channels[self.feature_stage], rcsm["prototype_momentum"])
            self.decoder = ReconstructionDecoder(channels[self.decoder_stage], stage_stride(self.decoder_stage),
                                                 widths=tuple(int(c) for c in rcsm["decoder_widths"]))

        # MAPOM (section 2.7)
        if self.dynamic_tau:
            self.meta_learner = MetaLearner(len(META_FEATURES), mapom["hidden"])
        bank = cfg["memory_bank"]
        if self.bank_on:
            self.bank = MemoryBank(self.student_a.feature_dim, num_classes, bank["capacity"], bank["kind"],
                                   bank["kappa"], bank["plain_threshold"], bank["min_count"])

        # losses (Eq. 17)
        self.loss_ssl = AttentionWeightedPseudoLabelLoss(cfg["joint"]["attention_weighting"] == "normalised")
        self.loss_cons_p = PredictionConsistencyLoss()
        self.loss_cons_f = FeatureConsistencyLoss(cfg["consistency"]["mmd_bandwidths"])
        self.loss_rec = ReconstructionLoss()
        self.loss_da = DomainAlignmentLoss()
        self.loss_mem = MemoryConsistencyLoss()
        self.loss_meta = MetaF1Loss(mapom["temperature"], mapom["f_beta"])
        self.loss_total = MADDTotalLoss()

        # adaptive state (all in checkpoints): Eq. 17's weights, tau of the previous step, teacher updates
        self.register_buffer("loss_weights", torch.tensor([float(weights[k]) for k in WEIGHT_NAMES]))
        self.ce_weights = ClassWeights(class_weights, num_classes)  # resolved from the data at fit start
        self.source_ce_weights = ClassWeights(class_weights, num_classes, "source")
        self.register_buffer("tau_prev", torch.tensor(0.7 if self.dynamic_tau else float(mapom["fixed_tau"])))
        self.register_buffer("teacher_syncs", torch.zeros((), dtype=torch.long))

    # ====================================================================== structure
    @property
    def student_b(self) -> MADDNet:
        return self.student_a if self.student_b_net is None else self.student_b_net

    @property
    def eval_net(self) -> MADDNet:
        return self.teacher if self.eval_network == "teacher" else self.student_a

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # pseudo-labels from running statistics, never batch statistics
        return self

    def apply_joint_freeze(self) -> None:
        for net in (self.student_a, self.student_b_net):
            if net is not None:
                net.requires_grad_(True)
                net.backbone.freeze(int(self.cfg["joint"]["freeze_stages"]))

    def load_networks(self, state: Mapping[str, torch.Tensor]) -> None:
        """One network's tensors (Phase 1's result) into the teacher and both students (decoder, meta-learner
        and bank stay fresh)."""
        for net in (self.student_a, self.student_b_net, self.teacher):
            if net is not None:
                net.load_state_dict(state)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.apply_joint_freeze()

    def use_pruned_student(self, student: MADDNet) -> None:
        """Phase 3's physically pruned student A replaces student A and is the network evaluated and exported."""
        self.student_a, self.eval_network = student, "student_a"

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

    # ====================================================================== Phase 2: one joint training step
    def step(self, batch: Mapping[str, Mapping[str, torch.Tensor]], val_cache: Mapping[str, torch.Tensor] | None = None,
             gather: Gather = local_rows) -> StepOutput:
        """Eq. 17 on one batch (``target_labeled``, ``target_unlabeled``, ``source``); ``val_cache``: the teacher
        on the labelled validation split (Eq. 13's data, :meth:`meta_validation_rows`)."""
        lab, unl, src = batch["target_labeled"], batch["target_unlabeled"], batch["source"]
        xl, yl, xu, xs = lab["image"], lab["label"], unl["image"], src["image"]
        nl, nu, ns = len(xl), len(xu), len(xs)
        weight = dict(zip(WEIGHT_NAMES, self.loss_weights))
        terms: dict[str, torch.Tensor] = {}
        logs: dict[str, torch.Tensor | float] = {}
        rows: dict[str, int] = {}

        # 1. views (no gradient) and the teacher
        with torch.no_grad():
            xt = self.base_augment(torch.cat([xl, xu]))  # geometric, label-preserving
            view_a = self.mild_view(torch.cat([xt, xs]))
            view_b = self.strong_view(xt[nl:]) if self.strong_pass else None
            t_out = self.teacher.forward_features(torch.cat([xt[nl:], xs]))
            t_probs_u, t_probs_s = t_out.logits.float().softmax(1).split([nu, ns])
            t_feat_u, t_feat_s = t_out.features.split([nu, ns])
        out_a = self.student_a_pass(view_a, ns)
        logits_l, logits_u, logits_s = out_a.logits.split([nl, nu, ns])
        f_l, f_u, f_s = out_a.features.split([nl, nu, ns])
        terms["ce"] = self.labelled_loss(logits_l, yl, logits_s, src["label"], logs)

        # 2. RCSM (Eqs. 9-11; labelled defect images are skipped: Eq. 10 trains on normal images, Eq. 12 weights
        # unlabelled ones)
        recon = None
        rec_err_u = torch.zeros(nu, device=xl.device)
        if self.rcsm_on:
            self.update_prototype(out_a.stages[self.feature_stage][nl + nu:], src, gather)
            normal_l = yl == self.normal_index if self.normal_index is not None else torch.ones_like(yl, dtype=torch.bool)
            idx = torch.cat([normal_l.nonzero().flatten(), torch.arange(nl, nl + nu, device=xl.device)])
            with frozen_bn_statistics(self.student_a):
                recon = self.reconstruct(xt[idx], out_a.stages[self.feature_stage][idx])
            recon.n_labelled = len(idx) - nu
            rec_err_u = recon.error[recon.n_labelled:].detach().flatten(1).mean(1)
            logs["train/mask_ratio"] = recon.mask.mean()

        # 3. MAPOM (Eqs. 14-15)
        all_feat_s, all_probs_s = gather(t_feat_s), gather(t_probs_s)  # every rank's source rows
        f_u_det = f_u.detach().float()
        pseudo = self.pseudo_labels(t_probs_u, t_feat_u, all_feat_s, all_probs_s, rec_err_u, f_u_det, gather, logs)
        keep, labels_u = pseudo.keep, pseudo.labels

        # 4. the remaining loss terms
        if self.strong_pass:
            with frozen_bn_statistics(self.student_b, enabled=self.share_students):
                out_b = self.student_b.forward_features(view_b)
        if weight["beta"] > 0:  # Eq. 12 on student A's mild view, or (pseudo_label_view=strong) on the strong view
            ssl_logits = out_b.logits if self.ssl_on_strong else logits_u
            attention_u = recon.attention[recon.n_labelled:] if recon is not None else None
            terms["ssl"] = self.loss_ssl(ssl_logits, labels_u, keep, attention_u, self.ce_weights.weight)
        if self.cons_on:  # Eqs. 7-8
            terms["cons_p"] = self.loss_cons_p(logits_u, out_b.logits)
            terms["cons_f"] = self.loss_cons_f(gather(f_u, True), gather(out_b.features, True))
        if recon is not None:  # Eq. 10 on the labelled normal images and the unlabelled ones kept as normal
            normal_u = keep & (labels_u == self.normal_index) if self.normal_index is not None else keep
            is_normal = torch.cat([torch.ones(recon.n_labelled, dtype=torch.bool, device=xl.device), normal_u])
            terms["rec"] = self.loss_rec(recon.output, recon.images, is_normal)
            logs["train/rec_normal_images"] = is_normal.float().sum()
        if weight["epsilon"] > 0:  # Eq. 6
            all_f_s, all_f_t = gather(f_s, True), gather(torch.cat([f_l, f_u]), True)
            terms["da"] = self.loss_da(all_f_s, all_f_t)
            rows.update(da_source=len(all_f_s), da_target=len(all_f_t))
        if self.bank_on and weight["zeta"] > 0:  # Eq. 16
            means, has = self.bank.class_means(labels_u)
            terms["mem"] = self.loss_mem(f_u, means, keep & has)
        if self.dynamic_tau:  # Eq. 13
            terms["meta"], tau_val = self.meta_loss(all_feat_s, all_probs_s, val_cache)
            if tau_val is not None:
                logs["train/tau_val"] = tau_val
        loss = self.loss_total(terms, weight)

        # 5. updates that depend on this step's decisions (no gradient)
        if self.bank_on:
            admit = keep & (pseudo.confidence > pseudo.tau + float(self.cfg["memory_bank"]["admission_margin"]))
            rows["bank_admitted_here"] = int(admit.sum())
            all_admit = gather(admit.long()).bool()  # every rank adds the same rows in the same order
            self.bank.add(gather(f_u_det)[all_admit], gather(labels_u)[all_admit], gather(unl["index"])[all_admit])
        self.tau_prev.copy_(pseudo.tau)
        return StepOutput(loss, terms, pseudo, logs, rows)

    def student_a_pass(self, views: torch.Tensor, n_source: int) -> NetOutput:
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

    def labelled_loss(self, logits_l: torch.Tensor, labels_l: torch.Tensor, logits_s: torch.Tensor,
                      labels_s: torch.Tensor, logs: dict) -> torch.Tensor:
        """``L_ce = CE(target labelled) + lambda_s CE(source)``: Eq. 17's labelled term, with ``joint.source_ce_weight``
        = lambda_s > 0 covering the (label-mapped) source images as Eq. 3's labelled risk does."""
        ce = F.cross_entropy(logits_l, labels_l, weight=self.ce_weights.weight)
        lambda_s = float(self.cfg["joint"]["source_ce_weight"])
        if lambda_s > 0:
            ce_source = F.cross_entropy(logits_s, labels_s, weight=self.source_ce_weights.weight)
            logs["train/loss_ce_source"] = ce_source
            ce = ce + lambda_s * ce_source
        return ce

    def reconstruct(self, images: torch.Tensor, stage_features: torch.Tensor) -> Reconstruction:
        """Eqs. 9-11: the defect-guided mask ``M`` (from the stage features and the source prototype), student A's
        backbone on ``x ⊙ (1 - M)`` up to the decoder's stage, ``x_hat = Decoder(...)``, the attention map ``A``."""
        mask = self.masker(stage_features.detach(), self.prototype.prototype, images, self.prototype.initialized)
        feats = self.student_a.forward_until(masked_input(images, mask), self.decoder_stage)
        output = self.decoder(feats, tuple(images.shape[-2:]))
        attention, error = anomaly_attention(output, images, self.cfg["rcsm"]["eps"])
        return Reconstruction(images, output, attention, error, mask, 0)

    def pseudo_labels(self, t_probs_u: torch.Tensor, t_feat_u: torch.Tensor, all_feat_s: torch.Tensor,
                      all_probs_s: torch.Tensor, rec_err_u: torch.Tensor, f_u: torch.Tensor, gather: Gather,
                      logs: dict) -> PseudoLabels:
        """Eq. 14: ``tau = 0.5 + 0.4 sigmoid(g(z))`` from the meta-features ``z`` of the (gathered) source and
        unlabelled teacher outputs and reconstruction errors (or ``mapom.fixed_tau``); the teacher's classes with
        confidence ``>= tau``; Eq. 15: those the memory bank finds similar to their class (``f_u``: student A's
        features, detached)."""
        confidence, labels = t_probs_u.max(1)
        if self.dynamic_tau:
            z = meta_features(all_feat_s, all_probs_s, gather(t_feat_u), gather(t_probs_u), gather(rec_err_u),
                              self.tau_prev, self.cfg["mapom"]["domain_features"])
            tau = self.meta_learner.tau(z.to(self.loss_weights)).detach()
        else:
            tau = self.tau_prev.new_tensor(float(self.cfg["mapom"]["fixed_tau"]))
        passed = confidence >= tau
        keep = passed
        if self.bank_on:
            clean, similarity = self.bank.purify(f_u, labels)
            keep = passed & clean
            if passed.any():
                logs["train/bank_similarity"] = similarity[passed].mean()
        return PseudoLabels(confidence, labels, tau, passed, keep)

    def meta_loss(self, f_src: torch.Tensor, p_src: torch.Tensor,
                  val_cache: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 13 on the cached teacher outputs of the validation split; only the meta-learner gets gradients.
        Zero (with the meta-learner in the graph) until a validation split of at least 2 images is cached."""
        c = val_cache or {}
        if not c or len(c["confidence"]) < 2:
            return 0.0 * self.meta_learner(torch.zeros(len(META_FEATURES), device=self.loss_weights.device)), None
        z_val = meta_features(f_src, p_src, c["features"], c["probs"], c["rec_error"], self.tau_prev,
                              self.cfg["mapom"]["domain_features"])
        tau_val = self.meta_learner.tau(z_val.to(self.loss_weights))
        return self.loss_meta(c["confidence"], c["correct"], tau_val), tau_val.detach()

    def update_prototype(self, source_stage: torch.Tensor, src: Mapping, gather: Gather = local_rows) -> None:
        """The RCSM's defect prototype: the momentum mean of the source images' defect-cell features (every rank's)."""
        cells = defect_cells(src["label"], src["mask"], tuple(source_stage.shape[-2:]), self.normal_index,
                             src.get("boxes"))
        s, n = DefectPrototype.batch_sum(source_stage.detach().float(), cells)
        s, n = gather(s.unsqueeze(0)).sum(0), gather(n.view(1)).sum()
        self.prototype.update(s, n)

    # ====================================================================== inference
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_net(images)

    def evaluate(self, images: torch.Tensor) -> EvalOutput:
        """Logits, anomaly map, defect probability and reconstruction error from one pass of each network needed.

        The map is Eq. 11's map of student A's masked reconstruction, in [0, 1] at input size. With ``rcsm.map_gate``
        (default) it is multiplied by the image's defect probability ``1 - p(normal)``, so images classified normal
        get a faint map (Eq. 11 alone scales every image's maximum to 1); optional Gaussian smoothing with
        ``rcsm.map_blur_sigma`` pixels.
        """
        out = self.eval_net.forward_features(images)
        out_a = out if self.eval_network == "student_a" else self.student_a.forward_features(images)
        probs = out_a.logits.softmax(1)
        defect_prob = 1 - probs[:, self.normal_index] if self.normal_index is not None else torch.ones_like(probs[:, 0])
        if not self.rcsm_on:
            return EvalOutput(out.logits, None, defect_prob, torch.zeros_like(defect_prob))
        recon = self.reconstruct(images, out_a.stages[self.feature_stage])
        amap = recon.attention
        sigma = float(self.cfg["rcsm"]["map_blur_sigma"])
        if sigma > 0:
            k = 2 * int(3 * sigma) + 1
            amap = kornia.filters.gaussian_blur2d(amap, (k, k), (sigma, sigma))
        if self.cfg["rcsm"]["map_gate"]:
            amap = amap * defect_prob.view(-1, 1, 1, 1)
        return EvalOutput(out.logits, amap.clamp(0, 1), defect_prob, recon.error.flatten(1).mean(1))

    @torch.no_grad()
    def meta_validation_rows(self, images: torch.Tensor, labels: torch.Tensor,
                             rec_error: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 13's data for one validation batch: the teacher's features, probabilities, confidence, whether its
        class is right, and the images' reconstruction error."""
        t = self.teacher.forward_features(images)
        probs = t.logits.float().softmax(1)
        confidence, pred = probs.max(1)
        return {"features": t.features.float(), "probs": probs, "confidence": confidence,
                "correct": (pred == labels).float(), "rec_error": rec_error.float()}
