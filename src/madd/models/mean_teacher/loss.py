"""Mean Teacher loss (Tarvainen & Valpola, NeurIPS 2017, Sec. 2 and App. B; official code's ramps).

.. math::
    L = \\frac{1}{B}\\sum_{b \\le B} H\\big(y_b, f_\\theta(\\eta(x_b))\\big)
      + w(t)\\,\\frac{1}{N K}\\sum_{n \\le N}\\big\\lVert \\sigma(f_\\theta(\\eta(x_n)))
                                            - \\sigma(f_{\\theta'}(\\eta'(x_n)))\\big\\rVert^2,
    \\qquad w(t) = w_{max}\\, e^{-5 (1 - T)^2},\\ T = \\mathrm{clip}(t / t_{ramp}, 0, 1)

:math:`\\theta'` is the EMA teacher (no gradient), :math:`\\eta, \\eta'` independent augmentations,
:math:`\\sigma` the softmax over ``K`` classes; the consistency runs over all ``N`` images of the step
(labelled first, then unlabelled), the cross-entropy over the ``B`` labelled ones. The squared error is
averaged over images and classes, which equals the official ``softmax_mse_loss`` (sum / K) divided by the
minibatch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - T)^2)`` with ``T = clip(current / rampup_length, 0, 1)`` (Laine & Aila 2017; Mean Teacher).

    0 ramp length means no ramp (1.0). ``current`` and ``rampup_length`` share a unit (epochs here).
    """
    if rampup_length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), rampup_length) / rampup_length
    return math.exp(-5.0 * phase * phase)


def softmax_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two softmaxes over images and classes; no gradient into the teacher."""
    return F.mse_loss(student_logits.softmax(1), teacher_logits.detach().softmax(1))


@dataclass
class MeanTeacherOutput:
    loss: torch.Tensor  # loss_sup + weight * loss_cons
    loss_sup: torch.Tensor
    loss_cons: torch.Tensor  # unweighted consistency
    weight: float


class MeanTeacherLoss(nn.Module):
    """:math:`L = \\mathrm{CE}(\\text{student}_{1..B}, y) + w(t)\\,\\mathrm{MSE}(\\sigma(\\text{student}),
    \\sigma(\\text{teacher}))` (Mean Teacher, Sec. 2), ``w(t) = consistency_weight * sigmoid_rampup(t, rampup)``.

    Inputs: student logits ``(N, K)``, teacher logits ``(N, K)`` of the same images (labelled rows first), the
    labels ``(B,)`` of the first ``B`` rows, and the training time ``t`` in epochs (fractional). ``class_weight``
    (optional, ``(K,)``) weights the cross-entropy by class, as the supervised baseline's ``model.class_weights``.
    """

    def __init__(self, consistency_weight: float = 10.0, rampup_epochs: float = 5.0) -> None:
        super().__init__()
        if consistency_weight < 0 or rampup_epochs < 0:
            raise ValueError(f"consistency_weight ({consistency_weight}) and rampup_epochs ({rampup_epochs}) "
                             "must be >= 0")
        self.consistency_weight, self.rampup_epochs = consistency_weight, rampup_epochs

    def weight(self, epoch: float) -> float:
        return self.consistency_weight * sigmoid_rampup(epoch, self.rampup_epochs)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, epoch: float,
        class_weight: torch.Tensor | None = None,
    ) -> MeanTeacherOutput:
        loss_sup = F.cross_entropy(student_logits[: len(labels)], labels, weight=class_weight)
        loss_cons = softmax_mse_loss(student_logits, teacher_logits)
        w = self.weight(epoch)
        return MeanTeacherOutput(loss_sup + w * loss_cons, loss_sup, loss_cons, w)
