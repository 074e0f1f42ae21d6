"""FixMatch loss (Sohn et al., NeurIPS 2020, Eqs. 2-4).

.. math::
    \\ell_s = \\frac{1}{B}\\sum_{b} H\\big(y_b, p(\\alpha(x_b))\\big),\\qquad
    \\ell_u = \\frac{1}{\\mu B}\\sum_{b} \\mathbb{1}\\big[\\max q_b \\ge \\tau\\big]\\,
              H\\big(\\hat q_b, p(\\mathcal{A}(u_b))\\big),\\qquad
    L = \\ell_s + \\lambda_u \\ell_u

with :math:`q_b = \\mathrm{softmax}(p(\\alpha(u_b)))` the prediction on the weak view (no gradient),
:math:`\\hat q_b = \\arg\\max q_b` the hard pseudo-label, :math:`\\mathcal{A}` the strong view, threshold
:math:`\\tau = 0.95` and :math:`\\lambda_u = 1` by default. The unlabelled term is averaged over all
:math:`\\mu B` unlabelled images (accepted or not), as in the paper and the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FixMatchOutput:
    loss: torch.Tensor  # l_s + lambda_u * l_u
    loss_sup: torch.Tensor
    loss_unsup: torch.Tensor
    mask: torch.Tensor  # (muB,) float, 1 where the weak-view confidence reached the threshold
    pseudo_labels: torch.Tensor  # (muB,) int64 argmax of the weak view


class FixMatchLoss(nn.Module):
    """:math:`L = \\ell_s + \\lambda_u \\ell_u` with the confidence-masked pseudo-label term (FixMatch Eq. 4).

    Inputs: labelled logits ``(B, K)`` and labels ``(B,)``, weak-view logits ``(muB, K)`` (detached inside) and
    strong-view logits ``(muB, K)`` of the same unlabelled images. No label of the unlabelled images is taken.
    ``class_weight`` (optional, ``(K,)``) weights both cross-entropies by the (pseudo-)label's class, as the
    supervised baseline's ``model.class_weights`` (a normal-dominant budget otherwise pseudo-labels ``good``).
    """

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"FixMatch threshold must be in [0, 1], got {threshold}")
        self.threshold, self.lambda_u = threshold, lambda_u

    def forward(
        self,
        logits_x: torch.Tensor,
        labels_x: torch.Tensor,
        logits_u_weak: torch.Tensor,
        logits_u_strong: torch.Tensor,
        class_weight: torch.Tensor | None = None,
    ) -> FixMatchOutput:
        loss_sup = F.cross_entropy(logits_x, labels_x, weight=class_weight)
        with torch.no_grad():
            confidence, pseudo = logits_u_weak.detach().softmax(1).max(1)
            mask = (confidence >= self.threshold).float()
        weight = mask if class_weight is None else mask * class_weight.to(mask)[pseudo]  # mean over all muB
        loss_unsup = (F.cross_entropy(logits_u_strong, pseudo, reduction="none") * weight).mean()
        return FixMatchOutput(loss_sup + self.lambda_u * loss_unsup, loss_sup, loss_unsup, mask, pseudo)
