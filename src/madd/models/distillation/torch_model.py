"""The frozen teacher of knowledge distillation (pure ``nn.Module``)."""

from __future__ import annotations

import torch
from torch import nn


class FrozenTeacher(nn.Module):
    """Wraps a trained network: no gradients, always in eval mode (BatchNorm statistics and dropout fixed)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(False)  # Lightning switches the whole module to train mode; the teacher must stay in eval
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
