"""MADD's loss terms, one small module each, and the total loss of Eq. 17.

The domain alignment loss ``L_da`` (Eq. 6, CORAL) and the MMD behind ``L_cons-f`` (Eq. 8) are the shared
:mod:`madd.losses` implementations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madd.losses import CorrelationAlignmentLoss, mmd_loss

DomainAlignmentLoss = CorrelationAlignmentLoss  # Eq. 6: L_da = ||Cov(f_s) - Cov(f_t)||_F^2 / (4 d^2)

#: Eq. 17's weights, in order, with the term each multiplies (``cons`` = ``L_cons-p + L_cons-f``); their values
#: (the paper's) live in conf/model/madd.yaml's ``loss_weights`` (``config_sections.defaults("loss_weights")``).
WEIGHT_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")
WEIGHTED_TERMS = ("ce", "ssl", "cons", "rec", "da", "mem", "meta")


class PredictionConsistencyLoss(nn.Module):
    """Eq. 7: ``L_cons-p = MSE(p_A(x_t), p_B(x_t^a))``, the mean squared difference of the two students'
    class-probability vectors (mean over images and classes, as ``F.mse_loss``); both sides get gradients."""

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits_a.softmax(1), logits_b.softmax(1))


class FeatureConsistencyLoss(nn.Module):
    """Eq. 8: ``L_cons-f = || 1/N sum_i phi(f_A^daa,i) - 1/N sum_i phi(f_B^daa,i) ||^2``, the squared MMD of the
    two students' adapter features with a mixture of Gaussian kernels (:func:`madd.losses.mmd_loss`: biased
    estimator, bandwidths = median pairwise distance x (1/4, 1/2, 1, 2, 4) unless ``bandwidths`` is given)."""

    def __init__(self, bandwidths: Sequence[float] | None = None) -> None:
        super().__init__()
        self.bandwidths = None if bandwidths is None else tuple(float(b) for b in bandwidths)

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        return mmd_loss(f_a, f_b, self.bandwidths)


class ReconstructionLoss(nn.Module):
    """Eq. 10: ``L_rec = ||x_hat - x_normal||_1``, the mean absolute pixel error over the **normal** target
    images only (``normal`` ``(B,)`` bool): the labelled images of the normal class and the unlabelled ones
    whose kept pseudo-label is normal (see the LightningModule). Zero, with the graph kept, when the batch
    has none."""

    def forward(self, reconstruction: torch.Tensor, images: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != reconstruction.shape[1]:
            images = images.expand(-1, reconstruction.shape[1], -1, -1)
        per_image = (reconstruction - images).abs().flatten(1).mean(1)
        w = normal.to(per_image.dtype)
        return (per_image * w).sum() / w.sum().clamp_min(1.0)


class AttentionWeightedPseudoLabelLoss(nn.Module):
    """Eq. 12: ``L_ssl-weighted = 1/(H W) sum_{i,j} A(i, j) · L_ce(p_A(x_t), y_hat)``.

    The classifier is image-level, so the pixel sum factorises: each image's cross-entropy against its
    pseudo-label is weighted by the mean of its anomaly attention map ``A`` (Eq. 11, no gradient through
    the weight). Only kept pseudo-labels (``keep``) count; the sum is divided by the number of unlabelled
    images, accepted or not (FixMatch's normalisation), so the term grows with the acceptance rate.
    With ``attention=None`` (RCSM off) every weight is 1. ``class_weight`` optionally weights each image's
    cross-entropy by its pseudo-class (the labelled term's class weights, against the majority-class bias).

    ``normalise_attention=True`` (a departure, ``model.joint.attention_weighting=normalised``) divides the
    attention weights by their mean over the kept images: ``A`` still ranks the images, but the term keeps the
    scale of a plain pseudo-label cross-entropy instead of shrinking by the map's mean level (measured on
    synthetic AWDD: mean(A) of about 0.1-0.3 left ``L_ssl`` at a tenth of ``L_ce`` or less).
    """

    def __init__(self, normalise_attention: bool = False) -> None:
        super().__init__()
        self.normalise_attention = normalise_attention

    def forward(self, logits: torch.Tensor, pseudo_labels: torch.Tensor, keep: torch.Tensor,
                attention: torch.Tensor | None = None, class_weight: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(logits, pseudo_labels, reduction="none")
        if class_weight is not None:
            ce = ce * class_weight.to(ce)[pseudo_labels]
        weight = keep.to(ce.dtype)
        if attention is not None:
            a = attention.detach().flatten(1).mean(1).to(ce.dtype)
            if self.normalise_attention and keep.any():
                a = a / a[keep].mean().clamp_min(1e-8)
            weight = weight * a
        return (ce * weight).sum() / max(len(ce), 1)


class MemoryConsistencyLoss(nn.Module):
    """Eq. 16: ``L_mem = MSE(f_new^daa, 1/|C_c| sum_{f in C_c} f)``: each kept pseudo-labelled feature against the
    bank's mean feature of its class (the mean is a constant target). Averaged over the rows in ``valid``."""

    def forward(self, features: torch.Tensor, class_means: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        w = valid.to(features.dtype)
        per_row = (features - class_means.detach().to(features)).pow(2).mean(1)
        return (per_row * w).sum() / w.sum().clamp_min(1.0)


class MetaF1Loss(nn.Module):
    """Eq. 13 through a differentiable surrogate: ``L_meta = 1 - softF1``.

    Over the labelled validation images, a pseudo-label is *correct* when the teacher's class equals the
    true label (``correct``), and *accepted* when the teacher's confidence ``c`` exceeds the threshold
    ``tau``. F1 of "accepted" against "correct" rewards thresholds that keep right pseudo-labels and drop
    wrong ones. The indicator ``I(c > tau)`` is replaced by ``a = sigmoid((c - tau) / T)``:
    ``TP = sum a·k``, ``FP = sum a·(1 - k)``, ``FN = sum (1 - a)·k``, ``softF1 = 2TP / (2TP + FP + FN)``.

    ``beta`` generalises F1 to ``F_beta = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``; ``beta = 1`` is Eq. 13's
    F1. ``beta < 1`` weighs precision (clean pseudo-labels) over recall: with a weak teacher F1 prefers accepting
    everything (precision = accuracy, recall = 1), which feeds wrong labels back.

    Fallback (no correct teacher prediction on the validation set, where F1 is 0 for every ``tau``): the loss is
    the mean soft acceptance ``mean(a)``, which raises ``tau`` to its upper bound. ``tau`` may be a scalar or
    one value per image.
    """

    def __init__(self, temperature: float = 0.05, beta: float = 1.0) -> None:
        super().__init__()
        self.temperature, self.beta = temperature, beta

    def forward(self, confidence: torch.Tensor, correct: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid((confidence - tau) / self.temperature)
        k = correct.to(a.dtype)
        if k.sum() == 0:
            return a.mean()
        tp, fp, fn = (a * k).sum(), (a * (1 - k)).sum(), ((1 - a) * k).sum()
        b2 = self.beta**2
        return 1.0 - (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp).clamp_min(1e-8)


class MADDTotalLoss(nn.Module):
    """Eq. 17: ``L_total = alpha L_ce-labeled + beta L_ssl-weighted + gamma (L_cons-p + L_cons-f) + delta L_rec
    + epsilon L_da + zeta L_mem + eta L_meta`` (the paper's "+" before delta is missing in the text).

    ``terms`` maps ``ce, ssl, cons_p, cons_f, rec, da, mem, meta`` to scalars (absent = switched off);
    ``weights`` maps ``alpha ... eta`` to numbers or 0-d tensors.
    """

    def forward(self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, float | torch.Tensor]) -> torch.Tensor:
        grouped = dict(terms)
        cons = [grouped.pop(k) for k in ("cons_p", "cons_f") if k in grouped]
        if cons:
            grouped["cons"] = sum(cons)
        unknown = set(grouped) - set(WEIGHTED_TERMS)
        if unknown:
            raise KeyError(f"unknown loss terms {sorted(unknown)}; expected {WEIGHTED_TERMS}")
        total = None
        for w_name, term in zip(WEIGHT_NAMES, WEIGHTED_TERMS):
            if term in grouped:
                part = weights[w_name] * grouped[term]
                total = part if total is None else total + part
        if total is None:
            raise ValueError("no loss term given")
        return total
