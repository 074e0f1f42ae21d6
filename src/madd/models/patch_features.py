"""Patch embeddings from a frozen pretrained backbone, shared by the normal-only detectors (PatchCore, PaDiM).

Raw ``[0, 1]`` images -> the backbone's normalisation -> ``forward_stages`` -> the chosen stages, each optionally
averaged over a ``pool`` x ``pool`` neighbourhood (PatchCore's locally aware patch features), resized to the
first chosen stage's grid and concatenated: ``(B, sum of their channels, h, w)``. The backbone stays in eval mode
(BatchNorm keeps its pretrained statistics) and is never trained. ``gaussian_blur`` is the maps' smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone, Normalize


class PatchFeatures(nn.Module):
    """Args:
        backbone: a :class:`~madd.models.backbones.Backbone` (``forward_stages`` -> 4 maps at strides 4-32).
        stages: indices (0-3) of the stages to concatenate; the first sets the grid (stride 4, 8, 16 or 32).
        pool: average-pooling window applied to each stage (stride 1, same size); 1 = none.
        resize_mode: ``F.interpolate`` mode bringing the later stages to the first one's grid.
    """

    def __init__(self, backbone: Backbone, stages: Sequence[int], pool: int = 1, resize_mode: str = "bilinear") -> None:
        super().__init__()
        stages = [int(s) for s in stages]
        num_stages = len(backbone.stage_channels)
        if not stages or any(not 0 <= s < num_stages for s in stages):
            raise MaddConfigError(f"model.stages={stages}: give backbone stage indices in 0..{num_stages - 1}")
        if pool < 1 or pool % 2 == 0:
            raise MaddConfigError(f"model.pool={pool}: use an odd window (1 = no pooling)")
        self.normalize = Normalize.of(backbone)
        self.backbone = backbone.requires_grad_(False).eval()
        self.stages = stages
        self.pool = nn.AvgPool2d(pool, stride=1, padding=pool // 2) if pool > 1 else nn.Identity()
        self.resize_mode = resize_mode
        self.out_channels = sum(backbone.stage_channels[s] for s in stages)

    def train(self, mode: bool = True) -> PatchFeatures:
        """Always eval: a frozen feature extractor keeps its BatchNorm statistics, even under ``trainer.fit``."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.forward_stages(self.normalize(images), last=max(self.stages))  # later stages unused
        picked = [self.pool(maps[s]) for s in self.stages]
        size = picked[0].shape[-2:]
        kwargs = {"align_corners": False} if self.resize_mode in ("bilinear", "bicubic") else {}
        resized = [picked[0]] + [F.interpolate(m, size=size, mode=self.resize_mode, **kwargs) for m in picked[1:]]
        return torch.cat(resized, 1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """anomalib's map smoothing: kernel ``2 * int(4 sigma + 0.5) + 1``, reflect borders (kornia)."""
    if sigma <= 0:
        return maps
    size = 2 * int(4.0 * sigma + 0.5) + 1
    return kornia.filters.gaussian_blur2d(maps, (size, size), (sigma, sigma), border_type="reflect")
