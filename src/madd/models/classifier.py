"""The plain image classifier (pure ``nn.Module``): normalise -> backbone -> global pool -> linear head."""

from __future__ import annotations

import torch
from torch import nn

from madd.models.backbones import Backbone, Normalize


class ImageClassifier(nn.Module):
    """Used by the supervised baseline, FixMatch, Mean Teacher and as the exported model."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, C)`` of raw [0, 1] images."""
        return self.pool(self.backbone(self.normalize(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
