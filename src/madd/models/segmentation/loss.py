"""Segmentation losses: a weighted sum of segmentation_models_pytorch losses chosen by name.

The paper trains with the Dice loss alone (Milletari et al. 2016, its ref. [31]). smp's ``DiceLoss`` computes,
per output channel ``c`` over every pixel ``i`` of the whole batch, with ``p`` the predicted probability
(sigmoid for binary masks, softmax for multi-class) and ``g`` the one-hot target::

    Dice_c = (2 * sum_i p_ic g_ic + s) / max(sum_i p_ic + sum_i g_ic + s, eps)
    L_Dice = mean over channels c of (1 - Dice_c) * [sum_i g_ic > 0]

This is the Sorensen form (V-Net's Eq. 1 squares ``p`` and ``g`` in the denominator; for binary targets only
the ``p`` term differs). Channels with no ground-truth pixel in the batch contribute 0, so a batch of
defect-free images gives the Dice loss no gradient at all: on normal-dominant data (KolektorSDD) add a pixel
term, e.g. ``model.loss.bce=1.0``, or the network is never taught to predict an empty mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from madd.errors import MaddConfigError

# name -> (smp class, takes ``mode``, modes it supports)
LOSSES: dict[str, tuple[type[nn.Module], bool, tuple[str, ...]]] = {
    "dice": (smp_losses.DiceLoss, True, ("binary", "multiclass")),
    "jaccard": (smp_losses.JaccardLoss, True, ("binary", "multiclass")),
    "tversky": (smp_losses.TverskyLoss, True, ("binary", "multiclass")),
    "focal": (smp_losses.FocalLoss, True, ("binary", "multiclass")),
    "lovasz": (smp_losses.LovaszLoss, True, ("binary", "multiclass")),
    "bce": (smp_losses.SoftBCEWithLogitsLoss, False, ("binary",)),
    "ce": (smp_losses.SoftCrossEntropyLoss, False, ("multiclass",)),
}

# smp 0.6's SoftCrossEntropyLoss fails on its own default (smooth_factor=None divides None): 0 = no smoothing
DEFAULT_OPTIONS: dict[str, dict] = {"ce": {"smooth_factor": 0.0}}


class SegmentationLoss(nn.Module):
    """``L = sum_k w_k * L_k(logits, target)`` over the smp losses named in ``weights``.

    Args:
        mode: ``binary`` (logits ``(B, 1, H, W)``, float target ``(B, 1, H, W)``) or ``multiclass``
            (logits ``(B, K, H, W)``, int64 target ``(B, H, W)`` of class indices).
        weights: ``{loss name: weight}``, e.g. ``{dice: 1.0}`` (the paper) or ``{dice: 1.0, bce: 1.0}``;
            a weight of 0 switches a term off (the config lists every term, so ``model.loss.bce=1.0`` works).
        options: optional ``{loss name: {keyword: value}}`` passed to that smp loss (``smooth``, ``gamma``...).

    ``forward`` returns the total and a dict of the unweighted terms (for logging).
    """

    def __init__(self, mode: str, weights: Mapping[str, float], options: Mapping[str, Mapping] | None = None) -> None:
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise MaddConfigError(f"model.mode={mode!r} must be binary or multiclass")
        options = dict(options or {})
        unknown = sorted(set(weights) - set(LOSSES)) + sorted(set(options) - set(LOSSES))
        if unknown:
            raise MaddConfigError(f"model.loss/model.loss_options name unknown terms {unknown}; "
                                  f"losses: {sorted(LOSSES)}")
        self.mode = mode
        self.weights = {k: float(v) for k, v in weights.items() if float(v) != 0.0}  # weight 0 = term off
        if not self.weights:
            raise MaddConfigError("model.loss has no term with a non-zero weight; e.g. model.loss.dice=1.0")
        self.terms = nn.ModuleDict()
        for name in self.weights:
            cls, takes_mode, modes = LOSSES[name]
            if mode not in modes:
                raise MaddConfigError(f"model.loss term {name!r} does not support mode={mode}; it supports {modes}")
            kwargs = {**DEFAULT_OPTIONS.get(name, {}), **dict(options.get(name, {}))}
            self.terms[name] = cls(mode=mode, **kwargs) if takes_mode else cls(**kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: term(logits, target) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts
