"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) as a pure module.

Fit: locally aware patch features of normal images (stages 2 and 3 by default, 3 x 3 average pooled, on the
stage-2 grid) -> a greedy k-center coreset of ``coreset_ratio`` of them is the memory bank.
Score: each test patch's distance to its nearest memory-bank patch is the patch score; the image score is the
largest patch score re-weighted by how isolated its nearest neighbour is (paper Eq. 7, as anomalib computes it:
``(1 - softmax(distances to that neighbour's num_neighbors nearest bank patches))[0] * s*``); the map is the
patch scores resized to the image (nearest) and Gaussian-blurred (sigma 4 px, kornia).
Distances are ``sqrt(max(|x|^2 - 2 x.m + |m|^2, 0))`` (matmul, exportable to ONNX; checked against
``torch.cdist`` in the tests); queries go through the bank in chunks outside export to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.patch_features import PatchFeatures, gaussian_blur
from madd.models.patchcore.coreset import k_center_greedy

QUERY_CHUNK = 4096  # query patches per distance block outside export (4096 x bank floats)


def euclidean_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` Euclidean distances between the rows of ``x (n, d)`` and ``y (m, d)``."""
    sq = (x * x).sum(-1, keepdim=True) - 2.0 * x @ y.transpose(-2, -1) + (y * y).sum(-1).unsqueeze(-2)
    return sq.clamp_min(0).sqrt()


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices ``(n, k)`` of the ``k`` nearest rows of ``bank`` for each row of ``queries``."""
    if _exporting() or queries.shape[0] <= QUERY_CHUNK:
        return euclidean_distances(queries, bank).topk(k, dim=1, largest=False)
    parts = [euclidean_distances(q, bank).topk(k, dim=1, largest=False) for q in queries.split(QUERY_CHUNK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class PatchCoreModel(nn.Module):
    """Args:
        backbone: the shared pretrained :class:`~madd.models.backbones.Backbone` (frozen here).
        stages: backbone stages whose features are concatenated (paper: ResNet layer2 + layer3 = stages 1, 2).
        coreset_ratio: share of the training patch features kept in the memory bank (paper: 1-10 %).
        projection_dim: random projection dimension for the coreset search (paper: 128; null = full features).
        num_neighbors: bank neighbours of the re-weighting (paper Eq. 7, b = 9); 1 = plain max patch score.
        coreset_seed: seeds the projection and the first coreset point; PatchCore is deterministic given it.
        blur_sigma: Gaussian smoothing of the map in pixels (paper: 4).
    """

    def __init__(self, backbone: Backbone, stages: Sequence[int] = (1, 2), coreset_ratio: float = 0.1,
                 projection_dim: int | None = 128, num_neighbors: int = 9, coreset_seed: int = 0,
                 blur_sigma: float = 4.0) -> None:
        super().__init__()
        if not 0.0 < coreset_ratio <= 1.0:
            raise MaddConfigError(f"model.coreset_ratio={coreset_ratio} must be in (0, 1]")
        if num_neighbors < 1:
            raise MaddConfigError(f"model.num_neighbors={num_neighbors} must be >= 1")
        self.features = PatchFeatures(backbone, stages, pool=3, resize_mode="bilinear")
        self.coreset_ratio, self.projection_dim = coreset_ratio, projection_dim
        self.num_neighbors, self.coreset_seed, self.blur_sigma = num_neighbors, coreset_seed, blur_sigma
        self.register_buffer("memory_bank", torch.empty(0, self.features.out_channels))
        self._store: list[torch.Tensor] = []

    @property
    def fitted(self) -> bool:
        return self.memory_bank.shape[0] > 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` patch features."""
        return self.features(images)

    def add(self, images: torch.Tensor) -> None:
        """Store the patch features of a batch of normal images (call :meth:`fit` after the last batch)."""
        emb = self.embed(images)
        self._store.append(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).cpu())

    def fit(self) -> None:
        """Memory bank = the k-center coreset of every stored patch feature."""
        if not self._store:
            raise MaddConfigError("PatchCore.fit: no normal images were added")
        feats = torch.cat(self._store)
        self._store = []
        size = max(1, int(len(feats) * self.coreset_ratio))
        idx = k_center_greedy(feats, size, self.projection_dim, self.coreset_seed)
        self.memory_bank = feats[idx].to(self.memory_bank.device)

    def image_scores(self, patch_scores: torch.Tensor, locations: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Paper Eq. 7 from ``patch_scores``/``locations (B, P)`` and the patch features ``embedding (B, P, D)``."""
        if self.num_neighbors == 1:
            return patch_scores.amax(1)
        rows = torch.arange(patch_scores.shape[0], device=patch_scores.device)
        worst = patch_scores.argmax(1)
        score = patch_scores[rows, worst]
        worst_features = embedding[rows, worst]
        neighbour = self.memory_bank[locations[rows, worst]]
        k = min(self.num_neighbors, self.memory_bank.shape[0])
        _, support = nearest_neighbours(neighbour, self.memory_bank, k)
        distances = (worst_features.unsqueeze(1) - self.memory_bank[support]).pow(2).sum(-1).sqrt()
        weights = 1.0 - F.softmax(distances, 1)[:, 0]
        return weights * score

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw image scores ``(B,)`` and anomaly maps ``(B, 1, H, W)`` (distances, unbounded)."""
        emb = self.embed(images)
        b, d, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)
        distances, locations = nearest_neighbours(flat.reshape(-1, d), self.memory_bank, 1)
        patch_scores, locations = distances.reshape(b, h * w), locations.reshape(b, h * w)
        scores = self.image_scores(patch_scores, locations, flat)
        maps = F.interpolate(patch_scores.reshape(b, 1, h, w), size=images.shape[-2:], mode="nearest")
        return scores, gaussian_blur(maps, self.blur_sigma)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint's memory bank has its own size: take its shape before loading."""
        key = prefix + "memory_bank"
        if key in state_dict:
            self.memory_bank = torch.empty_like(state_dict[key], device=self.memory_bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
