"""Exponential moving average of a student's weights into a teacher (Mean Teacher, MADD's teacher network).

Parameters are averaged with torch's own EMA kernel (``torch.optim.swa_utils.get_ema_multi_avg_fn``,
a fused ``lerp``); buffers (BatchNorm running statistics and counters) are copied from the student, so the
teacher normalises with the student's current statistics. ``torch.optim.swa_utils.AveragedModel`` is not used
because it owns a deep copy of the network; here the teacher is an ordinary submodule of the LightningModule,
so it is saved in checkpoints with everything else.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def _check_same_structure(teacher: nn.Module, student: nn.Module) -> None:
    t_names = [n for n, _ in teacher.named_parameters()] + [n for n, _ in teacher.named_buffers()]
    s_names = [n for n, _ in student.named_parameters()] + [n for n, _ in student.named_buffers()]
    if t_names != s_names:
        raise ValueError("teacher and student must have the same architecture (parameter/buffer names differ)")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``theta_t <- decay * theta_t + (1 - decay) * theta_s`` for every parameter; buffers copied.

    ``decay`` in [0, 1]: 0 copies the student, 1 leaves the teacher unchanged.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    _check_same_structure(teacher, student)
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if t_params:
        get_ema_multi_avg_fn(decay)(t_params, [p.detach() for p in s_params], None)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        t_buf.copy_(s_buf)


def warmup_decay(step: int, decay: float) -> float:
    """``min(1 - 1 / (step + 1), decay)``, the EMA decay at optimiser step ``step`` (1, 2, ...) with the warm-up of
    Mean Teacher's official code (Tarvainen & Valpola, 2017): a true running mean of the student's weights over
    the first ``1 / (1 - decay) - 1`` steps, then the fixed ``decay``. Without it a teacher that starts from an
    untrained head (a fresh classifier) keeps ``decay^t`` of that head for hundreds of steps."""
    return min(1.0 - 1.0 / (step + 1), decay)


@torch.no_grad()
def copy_weights(teacher: nn.Module, student: nn.Module) -> None:
    """Make ``teacher`` an exact copy of ``student`` (parameters and buffers), keeping the teacher's objects."""
    _check_same_structure(teacher, student)
    for t, s in zip([*teacher.parameters(), *teacher.buffers()], [*student.parameters(), *student.buffers()],
                    strict=True):
        t.copy_(s)
