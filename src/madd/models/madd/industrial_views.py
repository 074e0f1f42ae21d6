"""MV-TSN's industrial views (section 2.5), built with kornia on whole batches (they run on the GPU too).

* **Mild view** (student A): brightness adjustment and low-intensity Gaussian noise, "slight environmental
  fluctuations in the same detection equipment".
* **Strong view** (student B): affine transformation, contrast inversion and industry-specific noise,
  "cross-device and cross-angle variation". The noise follows the imaging modality:

  ============== ==================================================================
  ``ultrasonic``  salt-and-pepper noise (kornia ``RandomSaltAndPepperNoise``)
  ``ct``          streak and ring artifacts (:class:`RandomCTArtifacts`, below)
  ``visual``      defocus blur plus sensor noise (camera imaging, e.g. bearings)
  ``none``        no modality noise
  ============== ==================================================================

Every view takes and returns ``(B, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import kornia.augmentation as K
import torch
from kornia.augmentation import IntensityAugmentationBase2D
from torch import nn

from madd.data.datamodule import IMAGING_MODALITIES
from madd.errors import MaddConfigError

MODALITIES = (*IMAGING_MODALITIES, "none")  # the data's modalities, or no sensor noise at all


class RandomCTArtifacts(IntensityAugmentationBase2D):
    """Add CT reconstruction artifacts: concentric **ring** artifacts (miscalibrated detector elements) and
    **streaks** through a common point (beam hardening / metal streaks).

    For every image: ``n_rings`` rings of radius ``r_k`` around a centre near the image centre,
    ``sum_k a_k exp(-(rho - r_k)^2 / (2 w^2))``, and ``n_streaks`` lines through that centre at angles
    ``theta_k``, ``sum_k b_k exp(-d_k^2 / (2 w^2))`` with ``d_k`` the distance to line ``k``; amplitudes are
    signed (bright or dark) and drawn uniformly in ``±amplitude``; the result is clamped to [0, 1].

    Hand-written: kornia, torchvision and albumentations have no CT artifact model.
    """

    def __init__(self, rings: tuple[int, int] = (1, 4), streaks: tuple[int, int] = (1, 3),
                 amplitude: tuple[float, float] = (0.05, 0.2), width: float = 1.0, p: float = 0.5,
                 same_on_batch: bool = False, keepdim: bool = False) -> None:
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        self.rings, self.streaks, self.amplitude, self.width = rings, streaks, amplitude, width
        self._max_rings, self._max_streaks = rings[1], streaks[1]

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        b = batch_shape[0]

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.rand(b, *shape) * (hi - lo) + lo

        def counts(lo: int, hi: int) -> torch.Tensor:
            return torch.randint(lo, hi + 1, (b,))

        sign = lambda *shape: torch.where(torch.rand(b, *shape) < 0.5, -1.0, 1.0)  # noqa: E731
        lo, hi = self.amplitude
        return {
            "centre": uniform(0.4, 0.6, 2),  # (y, x) as fractions of the image size
            "n_rings": counts(*self.rings),
            "ring_radius": uniform(0.05, 0.7, self._max_rings),  # fraction of the image diagonal / 2
            "ring_amp": uniform(lo, hi, self._max_rings) * sign(self._max_rings),
            "n_streaks": counts(*self.streaks),
            "streak_angle": uniform(0.0, math.pi, self._max_streaks),
            "streak_amp": uniform(lo, hi, self._max_streaks) * sign(self._max_streaks),
        }

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = input.shape
        dev, dt = input.device, input.dtype
        p = {k: v.to(dev) for k, v in params.items() if isinstance(v, torch.Tensor)}
        yy = torch.arange(h, device=dev, dtype=dt).view(1, h, 1)
        xx = torch.arange(w, device=dev, dtype=dt).view(1, 1, w)
        cy = (p["centre"][:, 0].to(dt) * h).view(b, 1, 1)
        cx = (p["centre"][:, 1].to(dt) * w).view(b, 1, 1)
        rho = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()  # (b, h, w)
        half_diag = 0.5 * math.hypot(h, w)
        two_w2 = 2 * self.width**2
        pattern = torch.zeros(b, h, w, device=dev, dtype=dt)
        for k in range(self._max_rings):
            on = (k < p["n_rings"]).to(dt).view(b, 1, 1)
            r = (p["ring_radius"][:, k].to(dt) * half_diag).view(b, 1, 1)
            pattern = pattern + on * p["ring_amp"][:, k].to(dt).view(b, 1, 1) * torch.exp(-((rho - r) ** 2) / two_w2)
        for k in range(self._max_streaks):
            on = (k < p["n_streaks"]).to(dt).view(b, 1, 1)
            theta = p["streak_angle"][:, k].to(dt).view(b, 1, 1)
            dist = (xx - cx) * torch.sin(theta) - (yy - cy) * torch.cos(theta)  # distance to the line
            pattern = pattern + on * p["streak_amp"][:, k].to(dt).view(b, 1, 1) * torch.exp(-(dist**2) / two_w2)
        return (input + pattern.unsqueeze(1)).clamp(0.0, 1.0)


class _Clamp(nn.Module):
    """Gaussian noise leaves [0, 1]; views must not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


def _modality_noise(modality: str, p: float) -> list[nn.Module]:
    if modality == "ultrasonic":
        return [K.RandomSaltAndPepperNoise(amount=(0.01, 0.05), salt_vs_pepper=(0.4, 0.6), p=p)]
    if modality == "ct":
        return [RandomCTArtifacts(p=p)]
    if modality == "visual":
        return [K.RandomGaussianBlur((5, 5), (0.5, 1.5), p=p), K.RandomGaussianNoise(std=0.03, p=p)]
    if modality == "none":
        return []
    raise MaddConfigError(f"model.views.modality={modality!r} is unknown; choose from {list(MODALITIES)}")


def build_mild_view(brightness: float = 0.1, noise_std: float = 0.02) -> nn.Module:
    """Student A's view: additive brightness shift in ``±brightness`` and Gaussian noise of std ``noise_std``."""
    return nn.Sequential(
        K.AugmentationSequential(
            K.RandomBrightness((1.0 - brightness, 1.0 + brightness), p=1.0),
            K.RandomGaussianNoise(std=noise_std, p=1.0),
            data_keys=["input"],
        ),
        _Clamp(),
    )


def build_strong_view(modality: str = "ultrasonic", degrees: float = 15.0, translate: float = 0.1,
                      scale: tuple[float, float] = (0.85, 1.15), invert_p: float = 0.5,
                      noise_p: float = 0.8) -> nn.Module:
    """Student B's view: random affine, contrast inversion (``x -> 1 - x`` with probability ``invert_p``) and
    the modality's noise (probability ``noise_p``)."""
    return nn.Sequential(
        K.AugmentationSequential(
            K.RandomAffine(degrees=degrees, translate=(translate, translate), scale=tuple(scale), p=1.0),
            K.RandomInvert(p=invert_p),
            *_modality_noise(modality, noise_p),
            data_keys=["input"],
        ),
        _Clamp(),
    )
