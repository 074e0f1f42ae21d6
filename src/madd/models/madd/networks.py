"""MADD's networks: the domain-adaptive adapter (Eq. 5), the student/teacher network that
carries it, and the lightweight reconstruction decoder of the RCSM (Eq. 9).

The meta-learner (Eq. 14) lives in :mod:`madd.models.madd.meta_threshold`, the memory bank in
:mod:`madd.models.madd.memory_bank`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone, Normalize
from madd.models.classifier import PooledFeatures, linear_head


@contextmanager
def frozen_bn_statistics(module: nn.Module, enabled: bool = True):
    """BatchNorm normalises with batch statistics but does not move its running statistics (momentum 0):
    auxiliary passes (masked images, strong views of a shared student, source rows) must not shift the statistics
    the evaluation uses. ``enabled=False``: a no-op (a network of its own may move its statistics)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class DomainAdaptiveAdapter(nn.Module):
    """Eq. 5: ``DAA(f) = LayerNorm(W2 · ReLU(W1 · f + b1) + b2 + f)``.

    ``W1, b1`` and ``W2, b2`` are two fully connected layers (bottleneck ``dim -> dim // reduction -> dim``);
    the residual ``+ f`` keeps the backbone feature. On a feature map ``(B, C, h, w)`` the adapter is
    applied to the ``C``-vector of every location (a 1x1 "token" adapter, as in transformer adapters), so
    the adapted map stays spatial; on ``(B, C)`` vectors it is applied directly.

    ``W2`` and ``b2`` start at zero (``zero_init``), so a freshly inserted adapter is ``LayerNorm(f)``: the
    transferred features pass through unchanged up to normalisation (the usual adapter initialisation).
    """

    def __init__(self, dim: int, reduction: int = 4, zero_init: bool = True) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.fc1 = nn.Linear(dim, hidden)  # W1, b1
        self.fc2 = nn.Linear(hidden, dim)  # W2, b2
        self.norm = nn.LayerNorm(dim)
        if zero_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.dim() == 4:  # (B, C, h, w): adapt each location's C-vector
            return self._adapt(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self._adapt(f)

    def _adapt(self, f: torch.Tensor) -> torch.Tensor:  # f: (..., C)
        return self.norm(self.fc2(F.relu(self.fc1(f))) + f)


@dataclass
class NetOutput:
    """What one forward pass of a MADD network returns.

    ``logits`` ``(B, K)``; ``features`` ``(B, C)``: the pooled domain-adaptive (adapter) features ``f^daa``
    used by Eqs. 6, 8, 15 and 16; ``stages``: the backbone's stage outputs (RCSM masks and decoder).
    """

    logits: torch.Tensor
    features: torch.Tensor
    stages: list[torch.Tensor]


class MADDNet(nn.Module):
    """A student (or the teacher): normalise -> backbone -> adapter on the last stage -> pool -> linear head.

    The adapter sits on the high-level features (the backbone's last stage), as TIM stage 2 prescribes.
    ``adapter=False`` replaces it with the identity (the "w/o DAA" ablation). Keys: ``backbone.*``,
    ``adapter.*``, ``head.*``. ``forward`` maps raw [0, 1] images to logits, so the network exports as is.
    ``pool_stages``/``zero_init_head`` as :class:`~madd.models.classifier.ImageClassifier` (``model/head``): the
    pooled features (``NetOutput.features``, which the consistency, memory bank and alignment terms use) are the
    adapted last stage, concatenated with the other listed stages' pooled maps.
    """

    def __init__(self, backbone: Backbone, num_classes: int, adapter: bool = True, adapter_reduction: int = 4,
                 dropout: float = 0.0, pool_stages=(3,), zero_init_head: bool = False) -> None:
        super().__init__()
        self.normalize = Normalize.of(backbone)
        self.backbone = backbone
        dim = backbone.out_channels
        self.adapter = DomainAdaptiveAdapter(dim, adapter_reduction) if adapter else nn.Identity()
        self.pool = PooledFeatures(backbone, tuple(pool_stages) + (3,))
        self.dropout = nn.Dropout(dropout)
        self.head = linear_head(self.pool.dim, num_classes, zero_init_head)

    @property
    def feature_dim(self) -> int:
        return self.pool.dim

    def forward_features(self, x: torch.Tensor) -> NetOutput:
        stages = self.backbone.forward_stages(self.normalize(x))
        features = self.pool([*stages[:-1], self.adapter(stages[-1])])
        return NetOutput(self.head(self.dropout(features)), features, stages)

    def forward_until(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The output of backbone stage ``stage`` (0-based) only: the reconstruction pass needs no more."""
        h = self.backbone.stem(self.normalize(x))
        for s in self.backbone.stages[: stage + 1]:
            h = s(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits


def stage_stride(stage: int) -> int:
    """Spatial stride of backbone stage ``stage`` (0-based): 4, 8, 16, 32 for every supported backbone."""
    return 2 ** (stage + 2)


def _split_stride(stride: int) -> list[int]:
    """Three upsampling factors (powers of two, largest first) whose product is ``stride``."""
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"decoder stride must be a power of two, got {stride}")
    exp = stride.bit_length() - 1
    parts = [exp // 3 + (1 if i < exp % 3 else 0) for i in range(3)]
    return [2**p for p in parts]


class ReconstructionDecoder(nn.Module):
    """Eq. 9's decoder: 3 transposed convolutions that restore the resolution, then 1 convolution to pixels.

    ``x_hat = Decoder(f_A^backbone(x ⊙ M))``. Each transposed convolution upsamples by a power of two
    (their product is the tapped stage's stride, e.g. 16 = 4·2·2) with BatchNorm and ReLU; the final 3x3
    convolution maps to ``out_channels`` and a sigmoid keeps the reconstruction in the image range [0, 1].
    When the input size is not a multiple of the stride the output is resized (bilinear) to it exactly.
    """

    def __init__(self, in_channels: int, stride: int, out_channels: int = 3,
                 widths: tuple[int, int, int] = (32, 16, 8)) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise MaddConfigError(f"model.rcsm.decoder_widths={list(widths)}: give three positive channel counts, "
                                  "one per transposed convolution (default [32, 16, 8])")
        layers: list[nn.Module] = []
        c = in_channels
        for factor, width in zip(_split_stride(stride), widths):
            # kernel 2s, padding s/2: exact x s upsampling with overlapping kernels (no checkerboard from k = s)
            k, p = (2 * factor, factor // 2) if factor > 1 else (3, 1)
            layers += [nn.ConvTranspose2d(c, width, k, stride=factor, padding=p, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = torch.sigmoid(self.out(self.up(features)))
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x
