"""The plain image classifier (pure ``nn.Module``): normalise -> backbone -> pooled stage features -> linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from madd.models.backbones import Backbone, Normalize


class PooledFeatures(nn.Module):
    """Global-average-pooled outputs of backbone stages ``stages`` (0-3), concatenated: ``(B, sum C_s)``.

    The last stage alone (``(3,)``) is the usual classifier input; several stages (``(1, 2, 3)``) keep the
    mid-level texture features that surface defects are made of, which ImageNet's last stage partly discards
    (the linear probe reads stages 1-3; the fine-tuned presets read the last stage only)."""

    def __init__(self, backbone: Backbone, stages: Sequence[int] = (3,)) -> None:
        super().__init__()
        self.stages = sorted({int(s) % 4 for s in stages})
        self.dim = sum(backbone.stage_channels[s] for s in self.stages)

    def forward(self, stage_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([stage_maps[s].mean((2, 3)) for s in self.stages], 1)


def linear_head(dim: int, num_classes: int, zero_init: bool = False) -> nn.Linear:
    """The classifier head; ``zero_init``: it starts at zero (every class equally likely), so the first fine-tuning
    steps do not push random gradients through pretrained features (``model.head.zero_init_head``)."""
    head = nn.Linear(dim, num_classes)
    if zero_init:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return head


class ImageClassifier(nn.Module):
    """Used by the supervised baseline, FixMatch, Mean Teacher, the linear probe and as the exported model.
    ``pool_stages``/``zero_init_head``: :class:`PooledFeatures` and :func:`linear_head` (``model/head``)."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0,
                 pool_stages: Sequence[int] = (3,), zero_init_head: bool = False) -> None:
        super().__init__()
        self.normalize = Normalize.of(backbone)
        self.backbone = backbone
        self.pool = PooledFeatures(backbone, pool_stages)
        self.dropout = nn.Dropout(dropout)
        self.head = linear_head(self.pool.dim, num_classes, zero_init_head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, C)`` of raw [0, 1] images."""
        return self.pool(self.backbone.forward_stages(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
