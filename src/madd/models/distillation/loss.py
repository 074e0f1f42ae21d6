"""Knowledge-distillation losses (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network").

MADD's Phase 3 (Sec. 2.8.2) distils the pruned student from the teacher but gives no formula; this is the
standard soft-target formulation it refers to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError


class SoftTargetLoss(nn.Module):
    r"""Soft-target KL divergence with temperature:

    .. math:: L_{kd} = T^2 \cdot \frac{1}{B} \sum_b \mathrm{KL}\big(\mathrm{softmax}(z^t_b / T) \,\|\,
              \mathrm{softmax}(z^s_b / T)\big)

    The :math:`T^2` factor keeps the gradient scale of the soft term independent of :math:`T`
    (Hinton et al., Sec. 2). Teacher logits are treated as constants.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise MaddConfigError(f"distillation temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * t * t


class DistillationLoss(nn.Module):
    r"""Total distillation loss: soft targets plus the hard-label cross-entropy,

    .. math:: L = \alpha_{kd} \, L_{kd}(z^s, z^t) + \alpha_{ce} \, \mathrm{CE}(z^s_{lab}, y)

    where :math:`L_{kd}` (:class:`SoftTargetLoss`) runs on every image the teacher sees (labelled or not)
    and the cross-entropy on the labelled ones only.
    """

    def __init__(self, temperature: float = 4.0, alpha_kd: float = 0.9, alpha_ce: float = 0.1) -> None:
        super().__init__()
        if alpha_kd < 0 or alpha_ce < 0 or alpha_kd + alpha_ce == 0:
            raise MaddConfigError(f"model.alpha_kd={alpha_kd} and model.alpha_ce={alpha_ce} must be >= 0, not both 0")
        self.soft = SoftTargetLoss(temperature)
        self.alpha_kd, self.alpha_ce = float(alpha_kd), float(alpha_ce)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labelled_logits: torch.Tensor,
        target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        kd = self.soft(student_logits, teacher_logits)
        ce = F.cross_entropy(labelled_logits, target)
        return {"loss": self.alpha_kd * kd + self.alpha_ce * ce, "loss_kd": kd, "loss_ce": ce}
