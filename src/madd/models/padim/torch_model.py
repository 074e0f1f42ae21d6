"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework", ICPR 2021) as a pure module.

Fit: features of stages 1-3 of the backbone (stages 0, 1, 2 here) on the stage-0 grid (nearest resize), a random
subset of ``num_features`` channels (drawn with ``channel_seed``), then one Gaussian per grid position over the
normal images: mean and ``(covariance + regularization * I)^-1``. Sums and outer-product sums are accumulated in
float64 batch by batch, so the training set never has to sit in memory at once.
Score: the Mahalanobis distance of each patch to its position's Gaussian, resized to the image (bilinear) and
Gaussian-blurred (sigma 4 px); the image score is the map's maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.patch_features import PatchFeatures, gaussian_blur


class PadimModel(nn.Module):
    """Args:
        backbone: the shared pretrained :class:`~madd.models.backbones.Backbone` (frozen here).
        stages: backbone stages whose features are concatenated (paper: ResNet layer1-3 = stages 0, 1, 2).
        num_features: channels kept by the random selection (paper: 100 for ResNet-18); at most the total.
        channel_seed: seeds the channel selection, the one random part of PaDiM.
        regularization: added to the covariance diagonal (paper: 0.01).
        blur_sigma: Gaussian smoothing of the map in pixels (paper: 4).
    """

    def __init__(self, backbone: Backbone, stages: Sequence[int] = (0, 1, 2), num_features: int = 100,
                 channel_seed: int = 0, regularization: float = 0.01, blur_sigma: float = 4.0) -> None:
        super().__init__()
        self.features = PatchFeatures(backbone, stages, pool=1, resize_mode="nearest")
        total = self.features.out_channels
        if not 0 < num_features <= total:
            raise MaddConfigError(f"model.num_features={num_features} must be in 1..{total} (the channels of "
                                  f"stages {list(stages)} of {getattr(backbone, 'name', 'the backbone')})")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(int(channel_seed)))
        self.register_buffer("channel_idx", order[:num_features].clone())
        self.regularization, self.blur_sigma = regularization, blur_sigma
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("inv_covariance", torch.empty(0))
        self._count, self._sum, self._outer = 0, None, None

    @property
    def fitted(self) -> bool:
        return self.mean.numel() > 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_features, h, w)``: the selected channels of the patch features."""
        return self.features(images).index_select(1, self.channel_idx)

    def add(self, images: torch.Tensor) -> None:
        """Accumulate the statistics of a batch of normal images (call :meth:`fit` after the last batch)."""
        emb = self.embed(images).flatten(2).double()  # (B, C, P)
        if self._sum is None:
            self._sum = torch.zeros_like(emb[0])
            self._outer = torch.zeros(emb.shape[2], emb.shape[1], emb.shape[1], dtype=torch.float64, device=emb.device)
        self._count += emb.shape[0]
        self._sum += emb.sum(0)
        self._outer += torch.einsum("bcp,bdp->pcd", emb, emb)

    def fit(self) -> None:
        """Mean ``(C, P)`` and inverse covariance ``(P, C, C)`` per position (unbiased covariance, as numpy.cov)."""
        n = self._count
        if n < 2:
            raise MaddConfigError(f"PaDiM.fit: {n} normal image(s) added; a covariance needs at least 2")
        mean = self._sum / n  # (C, P)
        mu = mean.t()  # (P, C)
        cov = (self._outer - n * mu.unsqueeze(2) * mu.unsqueeze(1)) / (n - 1)
        cov += self.regularization * torch.eye(cov.shape[1], dtype=cov.dtype, device=cov.device)
        self.mean = mean.float()
        self.inv_covariance = torch.linalg.inv(cov).float()
        self._count, self._sum, self._outer = 0, None, None

    def distances(self, emb: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distances ``(B, 1, h, w)`` of the embeddings ``(B, C, h, w)``."""
        b, c, h, w = emb.shape
        delta = (emb.reshape(b, c, h * w) - self.mean).permute(2, 0, 1)  # (P, B, C)
        sq = (torch.matmul(delta, self.inv_covariance) * delta).sum(2)  # (P, B)
        return sq.clamp_min(0).sqrt().t().reshape(b, 1, h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image scores ``(B,)`` and anomaly maps ``(B, 1, H, W)`` (Mahalanobis distances, unbounded)."""
        dist = self.distances(self.embed(images))
        maps = gaussian_blur(F.interpolate(dist, size=images.shape[-2:], mode="bilinear", align_corners=False),
                             self.blur_sigma)
        return maps.flatten(1).amax(1), maps

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The Gaussians' shapes come from the checkpoint (they depend on the image size)."""
        for name in ("mean", "inv_covariance"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
