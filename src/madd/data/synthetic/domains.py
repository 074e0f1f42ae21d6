"""The synthetic imaging domains: backgrounds, defect renderers, sensor models, and the registry.

A domain is three functions, each with its own random stream so that switching the defect off leaves
every other pixel byte-identical (that is how the tests check that masks sit where the defects are):

* ``background(rng, n) -> (I, ctx)``: defect-free grey intensity ``I`` (float32, ~[0, 1]) plus a
  context dict with the geometry defects need (seam position, ring centre, ...);
* ``defects[cls](rng, I, ctx) -> (I', mask)``: returns a *new* intensity map with one defect class
  drawn in, and its boolean mask;
* ``finish(rng, I, ctx) -> image``: sensor noise and colour, float in [0, 1], ``HxW`` or ``HxWx3``.

All sizes are given at 128 px and scaled by ``s = n / 128`` so a 256 px image looks like a sharper
version of a 128 px one rather than a different texture.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from madd.errors import MaddConfigError

from .primitives import (
    F32,
    blob_alpha,
    coords,
    jagged_path,
    log_uniform,
    noise1d,
    polyline_alpha,
    salt_and_pepper,
    sample1d,
    smooth_noise,
    soft_step,
    speckle,
)

Ctx = dict
DefectFn = Callable[[np.random.Generator, np.ndarray, Ctx], tuple[np.ndarray, np.ndarray]]

GOOD = "good"
#: A defect must cover at least this many pixels, else it is redrawn (keeps every label honest).
MIN_DEFECT_AREA = 3


@dataclass(frozen=True)
class DomainSpec:
    """One synthetic imaging domain.

    Attributes:
        name: registry key.
        description: one line for docs and error messages.
        class_names: ``("good", <defects>...)``; index 0 is always the normal class.
        channels: 1 (saved as greyscale PNG) or 3 (RGB PNG).
        normal_fraction: default share of ``good`` images; the rest is split evenly over the defects.
    """

    name: str
    description: str
    class_names: tuple[str, ...]
    channels: int
    normal_fraction: float
    background: Callable[[np.random.Generator, int], tuple[np.ndarray, Ctx]] = field(repr=False)
    defects: Mapping[str, DefectFn] = field(repr=False)
    finish: Callable[[np.random.Generator, np.ndarray, Ctx], np.ndarray] = field(repr=False)

    def default_proportions(self) -> list[float]:
        k = len(self.class_names) - 1
        return [self.normal_fraction] + [(1.0 - self.normal_fraction) / k] * k


# --------------------------------------------------------------------------------------- helpers


def _darken(I: np.ndarray, alpha: np.ndarray, k: float | np.ndarray) -> np.ndarray:
    """Multiplicative darkening: keeps the texture visible through the defect, like real shading."""
    return I * (1.0 - k * alpha)


def _brighten(I: np.ndarray, alpha: np.ndarray, delta: float | np.ndarray) -> np.ndarray:
    return I + delta * alpha


def _crack_alpha(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    angle: float,
    length: float,
    s: float,
    hw_max: float,
    jag: float = 0.55,
    branch_p: float = 0.35,
) -> np.ndarray:
    """A thin jagged, tapering line centred on ``centre`` (optionally with one side branch)."""
    step = max(2.5 * s, 2.0)
    dy, dx = np.sin(angle), np.cos(angle)
    start = (centre[0] - dy * length / 2, centre[1] - dx * length / 2)
    pts = jagged_path(rng, start, angle, length, step, jag)
    t = np.linspace(0.0, 1.0, len(pts))
    # taper towards both tips; >= 0.5 px so the core pixel always reaches alpha 1 (mask pixel)
    hw = np.maximum(hw_max * (0.35 + 0.65 * np.sin(np.pi * t)), 0.5)
    alpha = polyline_alpha(shape, pts, hw)
    if rng.random() < branch_p and len(pts) > 4:
        j = int(rng.integers(len(pts) // 4, 3 * len(pts) // 4))
        b_angle = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
        b_len = length * rng.uniform(0.2, 0.5)
        b_pts = jagged_path(rng, tuple(pts[j]), b_angle, b_len, step, jag)
        b_hw = np.maximum(hw[j] * np.linspace(0.8, 0.3, len(b_pts)), 0.5)
        alpha = np.maximum(alpha, polyline_alpha(shape, b_pts, b_hw))
    return alpha


def _blobs(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    strengths: np.ndarray,
    irregularity: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Union alpha of several blobs plus a per-pixel strength map (each blob its own contrast)."""
    alpha = np.zeros(shape, dtype=F32)
    strength = np.zeros(shape, dtype=F32)
    for (cy, cx), r, k in zip(centres, radii, strengths):
        a, (ys, xs) = blob_alpha(rng, shape, (cy, cx), r, irregularity)
        if a.size == 0:
            continue
        win_a = alpha[ys, xs]
        take = a > win_a
        strength[ys, xs] = np.where(take, k, strength[ys, xs])
        alpha[ys, xs] = np.maximum(win_a, a)
    return alpha, strength


def _mask(alpha: np.ndarray) -> np.ndarray:
    return alpha >= 0.5


def _largest_region(alpha: np.ndarray) -> np.ndarray:
    """Drop the satellite islands a noisy outline can spawn: one region defect = one region (one box).

    Islands are removed from the alpha (so from the image too), except their faint fringe next to the
    kept region, which stays within a pixel or two of the mask.
    """
    labels, n = ndimage.label(alpha >= 0.5, structure=np.ones((3, 3)))
    if n <= 1:
        return alpha
    keep = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    support = ndimage.binary_dilation(keep, iterations=2)
    return np.where(support & ((labels == 0) | keep), alpha, 0.0).astype(F32)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# ------------------------------------------------------------------- awdd: ultrasonic weld scans


def _awdd_background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, Ctx]:
    """A bright weld-seam band across a dark B-scan, with bead ripples and scan-line streaks."""
    s = n / 128.0
    yy, xx = coords(n, n)
    theta = rng.uniform(-0.1, 0.1)  # up to ~6 degrees of tilt
    cy = n * (0.5 + rng.uniform(-0.12, 0.12))
    half = n * rng.uniform(0.09, 0.15)
    ct, st = np.cos(theta), np.sin(theta)
    d = (yy - cy) * ct - (xx - n / 2) * st  # signed distance across the seam
    u = (xx - n / 2) * ct + (yy - cy) * st  # position along the seam
    half_local = half * (1.0 + 0.08 * sample1d(noise1d(rng, 3 * n, 14 * s), u, 1.5 * n))
    seam = np.clip((half_local - np.abs(d)) / (4.0 * s) + 0.5, 0.0, 1.0)
    # chevron-shaped solidification ripples of a weld bead
    period = rng.uniform(5.0, 9.0) * s
    ripple = np.sin(2 * np.pi * (u / period + rng.uniform(0.8, 1.6) * (d / half) ** 2))
    streaks = sample1d(noise1d(rng, 3 * n, 1.2 * s), d, 1.5 * n)  # scan-line banding
    g = rng.uniform(0, 2 * np.pi)
    grad = ((xx * np.cos(g) + yy * np.sin(g)) / n - 0.5) * rng.uniform(0.06, 0.16)
    low = smooth_noise(rng, (n, n), 24 * s)
    I = (
        rng.uniform(0.18, 0.28)
        + grad
        + 0.03 * low
        + 0.025 * streaks
        + seam * (rng.uniform(0.22, 0.32) + 0.045 * ripple)
    ).astype(F32)
    ctx = dict(n=n, s=s, d=d, u=u, half=half, half_local=half_local, theta=theta, cy=cy)
    return I, ctx


def _awdd_seam_point(ctx: Ctx, u0: float, d0: float) -> tuple[float, float]:
    """Image (y, x) of a point given in seam coordinates (along ``u0``, across ``d0``)."""
    ct, st = np.cos(ctx["theta"]), np.sin(ctx["theta"])
    return ctx["cy"] + u0 * st + d0 * ct, ctx["n"] / 2 + u0 * ct - d0 * st


def _awdd_crack(rng, I, ctx):
    n, s, half, theta = ctx["n"], ctx["s"], ctx["half"], ctx["theta"]
    transverse = rng.random() < 0.4  # weld cracks run along or across the bead
    length = log_uniform(rng, 0.08 * n, (2.2 * half) if transverse else 0.45 * n)
    centre = _awdd_seam_point(ctx, rng.uniform(-0.35, 0.35) * n, rng.uniform(-0.6, 0.6) * half)
    angle = theta + (np.pi / 2 if transverse else 0.0) + rng.normal(0, 0.2)
    alpha = _crack_alpha(rng, I.shape, centre, angle, length, s, rng.uniform(0.5, 1.0) * s)
    if rng.random() < 0.7:
        out = _darken(I, alpha, rng.uniform(0.5, 0.85))
    else:  # open crack faces also show up as bright reflectors in ultrasound
        out = _brighten(I, alpha, rng.uniform(0.28, 0.45))
    return out, _mask(alpha)


def _awdd_pore(rng, I, ctx):
    n, s, half = ctx["n"], ctx["s"], ctx["half"]
    k = int(rng.choice([1, 1, 1, 2, 3, 4]))
    u0 = rng.uniform(-0.38, 0.38) * n
    us = u0 + rng.normal(0, 0.06 * n, k)  # porosity comes in loose clusters
    ds = rng.uniform(-0.75, 0.75, k) * half
    centres = np.array([_awdd_seam_point(ctx, a, b) for a, b in zip(us, ds)])
    radii = np.array([log_uniform(rng, 1.0 * s, 6.0 * s) for _ in range(k)])
    bright = rng.random() < 0.5  # gas pores reflect (bright) or shadow (dark) depending on depth
    strengths = rng.uniform(0.2, 0.4, k) if bright else rng.uniform(0.55, 0.85, k)
    alpha, strength = _blobs(rng, I.shape, centres, radii, strengths)
    out = _brighten(I, alpha, strength) if bright else _darken(I, alpha, strength)
    return out, _mask(alpha)


def _awdd_edge_burn(rng, I, ctx):
    n, s, d, u = ctx["n"], ctx["s"], ctx["d"], ctx["u"]
    side = rng.choice([-1.0, 1.0])
    length = rng.uniform(0.2, 0.6) * n
    uc = rng.uniform(-1, 1) * (0.5 * n - length / 2) * 0.9
    thick = rng.uniform(2.5, 6.0) * s
    nz = smooth_noise(rng, I.shape, 4 * s)
    across = thick * (1.0 + 0.45 * nz) - np.abs(d - side * ctx["half_local"])
    along = (length / 2) * (1.0 + 0.15 * nz) - np.abs(u - uc)
    alpha = _largest_region(soft_step(np.minimum(across, along), 1.5))
    k = rng.uniform(0.45, 0.75) * (1.0 + 0.15 * smooth_noise(rng, I.shape, 3 * s))  # mottled
    return _darken(I, alpha, np.clip(k, 0.2, 0.9)), _mask(alpha)


def _awdd_incomplete(rng, I, ctx):
    n, s, d, u, half = ctx["n"], ctx["s"], ctx["d"], ctx["u"], ctx["half"]
    length = rng.uniform(0.2, 0.65) * n
    uc = rng.uniform(-1, 1) * (0.5 * n - length / 2) * 0.9
    line = d - rng.uniform(-0.15, 0.15) * half - 1.0 * s * sample1d(noise1d(rng, 3 * n, 10 * s), u, 1.5 * n)
    hw = rng.uniform(0.8, 2.2) * s * (1.0 + 0.3 * sample1d(noise1d(rng, 3 * n, 4 * s), u, 1.5 * n))
    field_ = np.minimum(hw - np.abs(line), length / 2 - np.abs(u - uc))
    alpha = soft_step(field_, 1.0)
    return _darken(I, alpha, rng.uniform(0.55, 0.85)), _mask(alpha)


def _awdd_finish(rng, I, ctx):
    """Ultrasonic sensor model: correlated multiplicative gamma speckle + salt-and-pepper dropouts."""
    I = I * speckle(rng, I.shape, rng.uniform(5.0, 10.0), 0.6)
    I = salt_and_pepper(rng, np.clip(I, 0.0, 1.0), rng.uniform(0.001, 0.004))
    return I


# ------------------------------------------------------------------------- bdd: bearing surfaces


def _bdd_background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, Ctx]:
    """Turned bearing race: concentric machining rings (full circles or arcs) and a specular band."""
    s = n / 128.0
    yy, xx = coords(n, n)
    if rng.random() < 0.5:  # looking at a face: ring centre in view
        cy, cx = n * (0.5 + rng.uniform(-0.2, 0.2, 2))
    else:  # looking at a race: centre far away, rings appear as gentle arcs
        a, R = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 2.0) * n
        cy, cx = n / 2 + R * np.sin(a), n / 2 + R * np.cos(a)
    r = np.hypot(yy - cy, xx - cx)
    length = int(np.ceil(r.max())) + 4
    marks = sample1d(noise1d(rng, length, 0.8 * s), r, 0.0)  # fine turning grooves
    zones = sample1d(noise1d(rng, length, 10 * s), r, 0.0)  # broader polishing zones
    rings = np.sin(2 * np.pi * r / (rng.uniform(3.0, 6.0) * s) + rng.uniform(0, 2 * np.pi))
    mod = 1.0 + 0.35 * smooth_noise(rng, (n, n), 16 * s)  # grooves fade in and out around the ring
    g = rng.uniform(0, 2 * np.pi)
    grad = ((xx * np.cos(g) + yy * np.sin(g)) / n - 0.5) * rng.uniform(0.03, 0.1)
    # specular highlight: an elongated Gaussian along the local ring tangent
    py, px = n * rng.uniform(0.2, 0.8, 2)
    tang = np.arctan2(py - cy, px - cx) + np.pi / 2
    along = (xx - px) * np.cos(tang) + (yy - py) * np.sin(tang)
    across = -(xx - px) * np.sin(tang) + (yy - py) * np.cos(tang)
    la, lc = rng.uniform(0.25, 0.6) * n, rng.uniform(0.04, 0.1) * n
    highlight = rng.uniform(0.15, 0.35) * np.exp(-((along / la) ** 2) - (across / lc) ** 2)
    I = (
        rng.uniform(0.42, 0.56)
        + 0.035 * rings * mod
        + 0.045 * marks * mod
        + 0.035 * zones
        + grad
        + highlight
    ).astype(F32)
    return I, dict(n=n, s=s, r=r, cy=cy, cx=cx)


def _bdd_pitting(rng, I, ctx):
    n, s = ctx["n"], ctx["s"]
    cy, cx = n * rng.uniform(0.12, 0.88, 2)
    spread = log_uniform(rng, 2.5 * s, 16.0 * s)
    k = int(rng.integers(4, 20))
    centres = np.stack([cy + rng.normal(0, spread / 2, k), cx + rng.normal(0, spread / 2, k)], 1)
    radii = np.array([log_uniform(rng, 0.6 * s, 2.2 * s) for _ in range(k)])
    alpha, strength = _blobs(rng, I.shape, centres, radii, rng.uniform(0.4, 0.75, k), 0.25)
    mask = _mask(alpha)
    # annotate the cluster, not each pit: close small gaps so nearby pits form one region/box
    r = max(int(round(2 * s)), 1)
    disk = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    ys, xs = np.nonzero(mask)
    if ys.size:  # close only inside the cluster's bounding window (padded so closing is not clipped)
        y0, y1 = max(ys.min() - 2 * r, 0), min(ys.max() + 2 * r + 1, n)
        x0, x1 = max(xs.min() - 2 * r, 0), min(xs.max() + 2 * r + 1, n)
        mask[y0:y1, x0:x1] |= ndimage.binary_closing(mask[y0:y1, x0:x1], structure=disk)
    return _darken(I, alpha, strength), mask


def _bdd_crack(rng, I, ctx):
    n, s = ctx["n"], ctx["s"]
    centre = tuple(n * rng.uniform(0.2, 0.8, 2))
    length = log_uniform(rng, 0.08 * n, 0.5 * n)
    alpha = _crack_alpha(rng, I.shape, centre, rng.uniform(0, np.pi), length, s, rng.uniform(0.5, 0.9) * s)
    return _darken(I, alpha, rng.uniform(0.45, 0.8)), _mask(alpha)


def _bdd_wear(rng, I, ctx):
    """A broad band along the rings where the grooves are smeared out and the tone shifts slightly."""
    n, s, r = ctx["n"], ctx["s"], ctx["r"]
    cy, cx = ctx["cy"], ctx["cx"]
    yy, xx = coords(n, n)
    phi = np.arctan2(yy - cy, xx - cx)
    # a point in view at least 0.25 n from the ring centre, so the band is an arc, not a tiny ring
    for _ in range(32):
        py, px = n * rng.uniform(0.15, 0.85, 2)
        if np.hypot(py - cy, px - cx) >= 0.25 * n:
            break
    rw = float(np.hypot(py - cy, px - cx))
    t0 = float(np.arctan2(py - cy, px - cx))
    width = rng.uniform(0.06, 0.16) * n
    length = rng.uniform(0.35, 0.9) * n
    nz = smooth_noise(rng, I.shape, 6 * s)
    across = (width / 2) * (1.0 + 0.25 * nz) - np.abs(r - rw)
    along = (length / 2) * (1.0 + 0.1 * nz) - np.abs(_wrap(phi - t0)) * max(rw, 1.0)
    alpha = _largest_region(soft_step(np.minimum(across, along), 2.0))
    # the machining grooves are polished away and replaced by finer rolling streaks, slight tone shift
    smeared = ndimage.gaussian_filter(I, 1.8 * s)
    streaks = sample1d(noise1d(rng, int(np.ceil(r.max())) + 4, 0.6 * s), r, 0.0)
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.09) * (0.8 + 0.2 * nz)
    worn = smeared + shift + rng.uniform(0.01, 0.025) * streaks
    strength = rng.uniform(0.75, 1.0)  # some of the original texture can survive
    out = I + (worn - I) * (alpha * strength)
    return out.astype(F32), _mask(alpha)


def _bdd_finish(rng, I, ctx):
    """Camera noise and a mild colour cast (some rigs are monochrome, some slightly warm/cool)."""
    I = I + rng.uniform(0.008, 0.02) * rng.standard_normal(I.shape, dtype=F32)
    if rng.random() < 0.4:
        tint = np.ones(3, dtype=F32)
    else:
        tint = (1.0 + rng.uniform(-0.05, 0.05, 3)).astype(F32)
        tint /= tint.mean()
    return I[..., None] * tint


# ---------------------------------------------------------------------- metal: the source domain


def _metal_background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, Ctx]:
    """Brushed steel: long fine lines in one direction, fine grain, soft uneven illumination."""
    s = n / 128.0
    yy, xx = coords(n, n)
    phi = rng.uniform(0, np.pi)
    across = -xx * np.sin(phi) + yy * np.cos(phi)
    fine = sample1d(noise1d(rng, 3 * n, 0.7 * s), across, 1.5 * n)
    medium = sample1d(noise1d(rng, 3 * n, 3.0 * s), across, 1.5 * n)
    fade = 1.0 + 0.5 * smooth_noise(rng, (n, n), 20 * s)  # brush lines fade in and out
    grain = smooth_noise(rng, (n, n), 2.0 * s)
    illum = smooth_noise(rng, (n, n), 48 * s)
    g = rng.uniform(0, 2 * np.pi)
    grad = ((xx * np.cos(g) + yy * np.sin(g)) / n - 0.5) * rng.uniform(0.04, 0.1)
    I = (
        rng.uniform(0.55, 0.72)
        + 0.045 * fine * fade
        + 0.03 * medium
        + 0.02 * grain
        + 0.05 * illum
        + grad
    ).astype(F32)
    return I, dict(n=n, s=s, phi=phi)


def _metal_crack(rng, I, ctx):
    n, s = ctx["n"], ctx["s"]
    centre = tuple(n * rng.uniform(0.2, 0.8, 2))
    length = log_uniform(rng, 0.08 * n, 0.5 * n)
    alpha = _crack_alpha(rng, I.shape, centre, rng.uniform(0, np.pi), length, s, rng.uniform(0.5, 0.9) * s)
    return _darken(I, alpha, rng.uniform(0.5, 0.8)), _mask(alpha)


def _metal_pore(rng, I, ctx):
    """Round pits with inner shading (lit far wall) so they read as holes, not stains."""
    n, s = ctx["n"], ctx["s"]
    k = int(rng.choice([1, 1, 2, 3]))
    centres = n * rng.uniform(0.12, 0.88, (k, 2))
    if k > 1:  # pores cluster
        centres = centres[:1] + rng.normal(0, 0.08 * n, (k, 2))
    radii = np.array([log_uniform(rng, 1.0 * s, 6.0 * s) for _ in range(k)])
    alpha, strength = _blobs(rng, I.shape, centres, radii, rng.uniform(0.55, 0.85, k))
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = coords(*I.shape)
    # shading: darker on the side facing the light (the near wall is in shadow)
    shade = np.zeros(I.shape, dtype=F32)
    for (cy, cx), r in zip(centres, radii):
        proj = ((xx - cx) * np.cos(light) + (yy - cy) * np.sin(light)) / max(r, 1.0)
        shade = np.where(np.hypot(yy - cy, xx - cx) <= r + 1, np.clip(proj, -1, 1), shade)
    k_map = np.clip(strength * (1.0 - 0.25 * shade), 0.0, 0.95)
    return _darken(I, alpha, k_map), _mask(alpha)


def _metal_scratch(rng, I, ctx):
    """Long, thin, nearly straight line: bright (burnished) or dark (groove)."""
    n, s = ctx["n"], ctx["s"]
    centre = tuple(n * rng.uniform(0.25, 0.75, 2))
    length = log_uniform(rng, 0.25 * n, 0.9 * n)
    angle = rng.uniform(0, 2 * np.pi)
    start = (centre[0] - np.sin(angle) * length / 2, centre[1] - np.cos(angle) * length / 2)
    pts = jagged_path(rng, start, angle, length, 3.0 * s, jag=0.02, drift=0.015)
    t = np.linspace(0.0, 1.0, len(pts))
    # smooth width change along the stroke, tapering at both ends (tool entering / leaving)
    hw = rng.uniform(0.5, 0.9) * s * (0.5 + 0.5 * np.sin(np.pi * t) ** 0.5)
    hw = np.maximum(hw, 0.5)
    alpha = polyline_alpha(I.shape, pts, hw)
    if rng.random() < 0.6:
        return _brighten(I, alpha, rng.uniform(0.15, 0.3)), _mask(alpha)
    return _darken(I, alpha, rng.uniform(0.25, 0.5)), _mask(alpha)


def _metal_finish(rng, I, ctx):
    """Camera noise and a cool steel tint that varies a little between parts/lighting."""
    I = I + rng.uniform(0.006, 0.015) * rng.standard_normal(I.shape, dtype=F32)
    tint = (np.array([0.93, 0.97, 1.03]) + rng.uniform(-0.03, 0.03, 3)).astype(F32)
    return I[..., None] * tint


# ------------------------------------------------------------------------------------ registry

DOMAINS: dict[str, DomainSpec] = {
    "awdd": DomainSpec(
        name="awdd",
        description="ultrasonic weld scans (grey, speckle + salt-and-pepper)",
        class_names=(GOOD, "crack", "pore", "edge_burn", "incomplete_weld"),
        channels=1,
        normal_fraction=0.6,
        background=_awdd_background,
        defects={
            "crack": _awdd_crack,
            "pore": _awdd_pore,
            "edge_burn": _awdd_edge_burn,
            "incomplete_weld": _awdd_incomplete,
        },
        finish=_awdd_finish,
    ),
    "bdd": DomainSpec(
        name="bdd",
        description="bearing surfaces (concentric machining rings, specular highlight, mild colour)",
        class_names=(GOOD, "pitting", "crack", "wear"),
        channels=3,
        normal_fraction=0.6,
        background=_bdd_background,
        defects={"pitting": _bdd_pitting, "crack": _bdd_crack, "wear": _bdd_wear},
        finish=_bdd_finish,
    ),
    "metal": DomainSpec(
        name="metal",
        description="brushed steel surfaces, the labelled source domain (RGB, steel tint)",
        class_names=(GOOD, "crack", "pore", "scratch"),
        channels=3,
        normal_fraction=0.25,
        background=_metal_background,
        defects={"crack": _metal_crack, "pore": _metal_pore, "scratch": _metal_scratch},
        finish=_metal_finish,
    ),
}


def get_domain(domain: str) -> DomainSpec:
    """The registered :class:`DomainSpec`; an unknown name raises ``MaddConfigError`` with the choices."""
    try:
        return DOMAINS[domain]
    except (KeyError, TypeError):
        raise MaddConfigError(
            f"unknown synthetic domain {domain!r}; valid domains: {', '.join(sorted(DOMAINS))}"
        ) from None


def class_names(domain: str) -> list[str]:
    """Class names of a domain, ``good`` first (label index = position in this list)."""
    return list(get_domain(domain).class_names)


def _domain_key(domain: str) -> int:
    # stable across runs and Python versions (unlike hash()), so seeds mean the same thing everywhere
    return zlib.crc32(domain.encode("utf-8"))


def image_seed(domain: str, seed: int, index: int) -> np.random.SeedSequence:
    """The per-image seed: a pure function of (domain, seed, index), so any subset can be rendered
    independently (parallel workers, resumed runs) and still match a full serial generation."""
    return np.random.SeedSequence(int(seed), spawn_key=(_domain_key(domain), 0, int(index)))


def render_sample(
    domain: str,
    image_size: int,
    seed: int,
    index: int,
    label: int,
    with_defect: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image and its mask.

    Returns ``(image, mask)``: ``image`` is uint8 ``HxW`` (1-channel domains) or ``HxWx3``;
    ``mask`` is bool ``HxW`` (all False for ``good`` or when ``with_defect=False``). With
    ``with_defect=False`` the image is the exact defect-free rendering of the same sample: the
    background, noise and colour streams are independent of the defect stream.
    """
    spec = get_domain(domain)
    n = int(image_size)
    bg_ss, defect_ss, noise_ss = image_seed(domain, seed, index).spawn(3)
    I, ctx = spec.background(np.random.default_rng(bg_ss), n)
    mask = np.zeros((n, n), dtype=bool)
    cls = spec.class_names[label]
    if cls != GOOD and with_defect:
        rng = np.random.default_rng(defect_ss)
        draw = spec.defects[cls]
        # redraw (same stream, so still deterministic) if a defect landed almost entirely off-image
        for _ in range(16):
            out, mask = draw(rng, I, ctx)
            if mask.sum() >= MIN_DEFECT_AREA:
                break
        I = out
    img = spec.finish(np.random.default_rng(noise_ss), I, ctx)
    img = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return img, mask
