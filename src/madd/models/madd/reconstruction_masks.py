"""RCSM (section 2.6): defect-guided masks, the source defect prototype and the anomaly attention map.

Mask rule (the paper: "a pixel is masked if its feature similarity to the source domain defect feature
exceeds θ_sim, or if the pixel belongs to a key structural region R_key", masking rate 20-30 %):

1. Local features of the target image (a backbone stage, stride 8 by default) are compared with the
   source-domain defect prototype ``p`` by cosine similarity, one value per feature cell.
2. Candidates = cells with ``sim >= θ_sim`` ∪ ``R_key``, where ``R_key`` = the ``key_fraction`` of cells with
   the largest mean Sobel gradient magnitude (edges: seam borders, rings, part contours; the paper does not
   define its key regions, gradient energy is the usual structural cue).
3. The masking rate is enforced per image: ``k = clamp(#candidates, ceil(r_min N), floor(r_max N))`` cells
   are masked, candidates first (highest similarity first), then the most defect-like remaining cells.

Masks are cell-wise (MAE-style patches of ``stride x stride`` pixels) and upsampled by nearest neighbour, so
the pixel masking rate equals the cell rate when the image size is a multiple of the stride. ``M = 1`` marks
a masked pixel and the decoder sees ``x ⊙ (1 - M)`` (Eq. 9's ``x_t ⊙ M`` with ``M`` read as the keep-mask).
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError


def masked_input(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x ⊙ (1 - M)``: masked pixels set to 0 (``mask`` ``(B, 1, H, W)`` in {0, 1})."""
    return images * (1.0 - mask)


def anomaly_attention(reconstruction: torch.Tensor, images: torch.Tensor,
                      eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11: ``A(i, j) = e(i, j) / (max(e) + eps)`` per image, with ``e = |x_hat - x|_1`` per pixel.

    The per-pixel L1 error is averaged over channels (the sum differs by a constant factor that the
    normalisation removes). Returns ``(A, e)``, both ``(B, 1, H, W)``; ``A`` is in [0, 1).
    """
    if images.shape[1] != reconstruction.shape[1]:
        images = images.expand(-1, reconstruction.shape[1], -1, -1)
    e = (reconstruction - images).abs().mean(1, keepdim=True)
    return e / (e.amax(dim=(2, 3), keepdim=True) + eps), e


def boxes_to_mask(boxes: list[torch.Tensor], size: tuple[int, int], device=None) -> torch.Tensor:
    """Rasterise per-image ``(n, 5)`` boxes ``(class, x1, y1, x2, y2)`` (pixels) into ``(B, 1, H, W)`` masks."""
    h, w = size
    out = torch.zeros(len(boxes), 1, h, w, device=device)
    for i, b in enumerate(boxes):
        for _, x1, y1, x2, y2 in b.tolist():
            out[i, 0, int(max(0, math.floor(y1))):int(min(h, math.ceil(y2))),
                int(max(0, math.floor(x1))):int(min(w, math.ceil(x2)))] = 1.0
    return out


def defect_cells(labels: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int], normal_index: int | None,
                 boxes: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Which feature cells of labelled (source) images show a defect: ``(B, h, w)`` bool.

    From the pixel mask where it has defect pixels, else from the boxes, else the whole image of a defect
    class (image-level labels only); normal images contribute no cell.
    """
    m = masks
    if boxes is not None:
        empty = m.flatten(1).amax(1) == 0
        if empty.any():
            m = torch.where(empty.view(-1, 1, 1, 1), boxes_to_mask(boxes, tuple(m.shape[-2:]), m.device), m)
    cells = F.adaptive_max_pool2d(m.float(), grid)[:, 0] > 0.5
    defect = labels != normal_index if normal_index is not None else torch.ones_like(labels, dtype=torch.bool)
    no_loc = cells.flatten(1).sum(1) == 0
    cells = torch.where((defect & no_loc).view(-1, 1, 1), torch.ones_like(cells), cells)
    return cells & defect.view(-1, 1, 1)


class DefectPrototype(nn.Module):
    """The source-domain defect feature ``f_s^defect``: an exponential moving average of the mean local
    feature over source defect cells (buffers, so it is in every checkpoint)."""

    def __init__(self, channels: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prototype", torch.zeros(channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def batch_sum(features: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of the ``(B, C, h, w)`` features over the selected cells, and their count (to gather across ranks)."""
        w = cells.unsqueeze(1).to(features.dtype)
        return (features * w).sum(dim=(0, 2, 3)), w.sum()

    @torch.no_grad()
    def update(self, feature_sum: torch.Tensor, count: torch.Tensor) -> None:
        if float(count) <= 0:
            return
        mean = feature_sum / count
        if bool(self.initialized):
            self.prototype.mul_(self.momentum).add_((1 - self.momentum) * mean)
        else:
            self.prototype.copy_(mean)
            self.initialized.fill_(True)


class DefectGuidedMasker(nn.Module):
    """The masking rule above; ``forward`` returns the pixel mask ``(B, 1, H, W)`` in {0, 1}."""

    def __init__(self, ratio: tuple[float, float] = (0.2, 0.3), sim_threshold: float = 0.5,
                 key_fraction: float = 0.1) -> None:
        super().__init__()
        lo, hi = ratio
        if not 0.0 <= lo <= hi < 1.0:

            raise MaddConfigError(f"model.rcsm.mask_ratio={list(ratio)} must satisfy 0 <= min <= max < 1")
        self.ratio, self.sim_threshold, self.key_fraction = (lo, hi), sim_threshold, key_fraction

    @staticmethod
    def key_scores(images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Mean Sobel gradient magnitude of the grey image per cell, ``(B, h, w)``."""
        grey = images.mean(1, keepdim=True)
        return F.adaptive_avg_pool2d(kornia.filters.sobel(grey), grid)[:, 0]

    def cell_counts(self, n_candidates: torch.Tensor, n_cells: int) -> torch.Tensor:
        lo = math.ceil(self.ratio[0] * n_cells - 1e-9)
        hi = max(lo, math.floor(self.ratio[1] * n_cells + 1e-9))
        return n_candidates.clamp(lo, hi)

    @torch.no_grad()
    def forward(self, features: torch.Tensor, prototype: torch.Tensor | None, images: torch.Tensor,
                prototype_ready: torch.Tensor | None = None) -> torch.Tensor:
        """``prototype_ready`` (a bool tensor, e.g. :attr:`DefectPrototype.initialized`): when false the prototype
        is ignored, as if None. A tensor condition rather than Python ``if`` keeps the choice inside an exported
        graph (torch.export, ONNX)."""
        b = features.shape[0]
        h, w = int(features.shape[2]), int(features.shape[3])  # fixed by the input size; ints for the tracers
        n = h * w
        sim = torch.zeros(b, h, w, device=features.device, dtype=features.dtype)  # no prototype: structure only
        if prototype is not None:
            proto_sim = F.cosine_similarity(features, prototype.view(1, -1, 1, 1).to(features), dim=1)  # (B, h, w)
            sim = proto_sim if prototype_ready is None else torch.where(prototype_ready, proto_sim, sim)
        key = self.key_scores(images, (h, w)).flatten(1)
        n_key = int(round(self.key_fraction * n))
        key_rank = key.argsort(1, descending=True).argsort(1)
        in_key = key_rank < n_key
        sim = sim.flatten(1)
        candidate = (sim >= self.sim_threshold) | in_key
        k = self.cell_counts(candidate.sum(1), n)
        # candidates first, most defect-like first; key strength breaks ties (e.g. before any prototype exists)
        key_norm = key / key.amax(1, keepdim=True).clamp_min(1e-12)
        priority = 4.0 * candidate.float() + sim + 1e-3 * key_norm
        rank = priority.argsort(1, descending=True).argsort(1)
        cells = (rank < k.unsqueeze(1)).view(b, 1, h, w).float()
        return F.interpolate(cells, size=images.shape[-2:], mode="nearest")
