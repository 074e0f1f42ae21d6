"""MV-TSN's views (industrial_views.py): shapes, ranges and each modality's artefacts."""

from __future__ import annotations

import math

import pytest
import torch

from madd.errors import MaddConfigError
from madd.models.madd.industrial_views import (
    MODALITIES,
    RandomCTArtifacts,
    build_mild_view,
    build_strong_view,
)


def test_views_keep_shape_and_range():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    mild = build_mild_view(brightness=0.1, noise_std=0.02)(x)
    assert mild.shape == x.shape and 0 <= mild.min() and mild.max() <= 1
    assert (mild - x).abs().mean() < 0.15  # mild stays close to the input
    for modality in MODALITIES:
        y = build_strong_view(modality)(x)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    with pytest.raises(MaddConfigError, match="modality"):
        build_strong_view("xray-ish")


def test_salt_and_pepper_and_contrast_inversion_in_ultrasonic_strong_view():
    torch.manual_seed(0)
    x = torch.full((8, 1, 32, 32), 0.5)
    y = build_strong_view("ultrasonic", degrees=0, translate=0, scale=(1, 1), invert_p=1.0, noise_p=1.0)(x)
    extreme = ((y == 0) | (y == 1)).float().mean()
    assert 0.005 < extreme < 0.1  # salt-and-pepper pixels
    no_geometry = {"degrees": 0, "translate": 0, "scale": (1, 1)}
    inverted = build_strong_view("none", invert_p=1.0, **no_geometry)(torch.full((2, 1, 8, 8), 0.2))
    assert torch.allclose(inverted, torch.full_like(inverted, 0.8))


def test_ct_artifacts_rings_and_streaks():
    torch.manual_seed(0)
    aug = RandomCTArtifacts(rings=(2, 2), streaks=(0, 0), amplitude=(0.3, 0.3), p=1.0)
    out = aug(torch.full((1, 1, 64, 64), 0.5))
    params = aug._params
    delta = (out - 0.5)[0, 0]
    cy, cx = (params["centre"][0] * 64).tolist()
    r = params["ring_radius"][0, 0].item() * 0.5 * math.hypot(64, 64)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    rho = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    on_ring = (rho - r).abs() < 0.5
    off = (rho - r).abs() > 6
    if on_ring.any():
        assert delta[on_ring].abs().mean() > delta[off].abs().mean()  # the ring is where it was drawn
    streaks_only = RandomCTArtifacts(rings=(0, 0), streaks=(1, 1), amplitude=(0.3, 0.3), p=1.0)
    streak = streaks_only(torch.full((1, 1, 32, 32), 0.5))
    assert ((streak - 0.5).abs() > 0.1).float().mean() > 0.02  # a line of changed pixels
