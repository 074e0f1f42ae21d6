"""Vectorised numpy drawing primitives shared by the synthetic domains.

Everything works on float32 intensity maps in [0, 1] (before final clipping) and returns *alpha*
maps in [0, 1]: the defect renderers blend with alpha and derive the mask as ``alpha >= 0.5``, so the
mask and the pixels a defect changes agree up to a soft edge of about one pixel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

F32 = np.float32


@lru_cache(maxsize=8)
def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinate grids ``(yy, xx)`` (cached and read-only: they are shared)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@lru_cache(maxsize=64)
def _bspline_taps(n_out: int, cell: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Knot indices ``(4, n_out)``, weights ``(4, n_out)`` and knot count of a uniform cubic B-spline
    with knot spacing ``cell`` evaluated at every output pixel."""
    n_knots = int(np.ceil(n_out / cell)) + 4
    t = np.arange(n_out, dtype=np.float64) / cell + 1.0
    i = np.floor(t).astype(np.int64)
    f = t - i
    w = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3]) / 6.0
    idx = np.stack([i - 1 + k for k in range(4)])
    w = w.astype(F32)
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w, n_knots


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise whose features are about ``cell`` pixels wide.

    White noise on a coarse lattice interpolated by a separable cubic B-spline, written as four
    gather-and-scale passes per axis. Why not ``scipy.ndimage.zoom`` (~25 ms per 256 px field) or a
    BLAS matmul (multi-threaded OpenBLAS stalls on busy/small machines and inside DataLoader
    workers): this is ~1 ms, single-threaded and predictable.
    """
    h, w = shape
    cell = max(float(cell), 1.0)
    iy, wy, gh = _bspline_taps(h, cell)
    ix, wx, gw = _bspline_taps(w, cell)
    low = rng.standard_normal((gh, gw), dtype=F32)
    rows = wy[0][:, None] * low[iy[0]]
    for k in range(1, 4):
        rows += wy[k][:, None] * low[iy[k]]
    out = wx[0][None, :] * rows[:, ix[0]]
    for k in range(1, 4):
        out += wx[k][None, :] * rows[:, ix[k]]
    std = out.std()
    return ((out - out.mean()) / (std if std > 0 else 1.0)).astype(F32)


def noise1d(rng: np.random.Generator, n: int, cell: float) -> np.ndarray:
    """1-D smooth noise (unit std) of length ``n``; index it with a projected coordinate."""
    cell = max(float(cell), 0.5)
    m = int(np.ceil(n / cell)) + 4
    knots = rng.standard_normal(m).astype(F32)
    t = np.arange(n, dtype=F32) / cell + 1.0
    out = np.interp(t, np.arange(m, dtype=F32), knots).astype(F32)
    if cell > 1.5:  # linear interpolation leaves kinks at the knots; soften them
        out = ndimage.gaussian_filter1d(out, cell / 3.0)
    std = out.std()
    return (out - out.mean()) / (std if std > 0 else 1.0)


def sample1d(table: np.ndarray, coord: np.ndarray, offset: float) -> np.ndarray:
    """Look up a 1-D noise ``table`` at (fractional) ``coord + offset`` with linear interpolation."""
    return np.interp(coord + offset, np.arange(table.size, dtype=F32), table).astype(F32)


def soft_step(x: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Anti-aliased step: 0 for ``x <= -width/2``, 1 for ``x >= width/2``, linear in between."""
    return np.clip(x / width + 0.5, 0.0, 1.0).astype(F32)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform draw: small sizes are as common as large ones per octave (small defects exist)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def jagged_path(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    length: float,
    step: float,
    jag: float,
    drift: float = 0.08,
) -> np.ndarray:
    """A random polyline ``(n, 2)`` of (y, x) vertices starting at ``start``.

    Each segment's heading is ``angle`` + an independent kick (std ``jag`` radians: the zig-zag of a
    crack) + a slow, mean-reverting drift (std ``drift`` per step: gentle overall curvature). Large
    ``jag`` gives crack-like jagged lines with a dominant direction; ``jag`` ~ 0 gives scratches.
    """
    n = max(int(np.ceil(length / step)), 2)
    kicks = rng.normal(0.0, drift, n)
    slow = np.empty(n, dtype=np.float64)
    acc = 0.0
    for i in range(n):  # n is tiny (tens of steps); a python loop keeps the recurrence readable
        acc = 0.9 * acc + kicks[i]
        slow[i] = acc
    heading = angle + slow + rng.normal(0.0, jag, n)
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=1) * step
    pts = np.vstack([np.asarray(start, dtype=np.float64)[None], start + np.cumsum(steps, axis=0)])
    return pts


def polyline_alpha(
    shape: tuple[int, int],
    pts: np.ndarray,
    half_width: np.ndarray | float,
    margin: int = 4,
) -> np.ndarray:
    """Alpha map of a polyline with (optionally per-vertex) half width, anti-aliased by one pixel.

    The polyline is densified to sub-pixel spacing and rasterised; a Euclidean distance transform
    (restricted to the path's bounding box) then gives each pixel its distance to the path and the
    index of the nearest path pixel, which carries the local half width (tapering cracks).
    """
    h, w = shape
    hw = np.broadcast_to(np.asarray(half_width, dtype=np.float64), (len(pts),))
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    dense_t = np.arange(0.0, t[-1] + 1e-9, 0.35)
    py = np.interp(dense_t, t, pts[:, 0])
    px = np.interp(dense_t, t, pts[:, 1])
    dhw = np.interp(dense_t, t, hw)
    iy, ix = np.rint(py).astype(np.int64), np.rint(px).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    alpha = np.zeros(shape, dtype=F32)
    if not inside.any():
        return alpha
    iy, ix, dhw = iy[inside], ix[inside], dhw[inside]
    pad = int(np.ceil(dhw.max())) + margin
    y0, y1 = max(iy.min() - pad, 0), min(iy.max() + pad + 1, h)
    x0, x1 = max(ix.min() - pad, 0), min(ix.max() + pad + 1, w)
    width_map = np.zeros((y1 - y0, x1 - x0), dtype=F32)
    # later points overwrite earlier ones on the same pixel; either width is a fine local value
    width_map[iy - y0, ix - x0] = dhw
    on_path = np.zeros(width_map.shape, dtype=bool)
    on_path[iy - y0, ix - x0] = True
    dist, (ny, nx) = ndimage.distance_transform_edt(~on_path, return_indices=True)
    local_hw = width_map[ny, nx]
    alpha[y0:y1, x0:x1] = np.clip(local_hw + 0.5 - dist, 0.0, 1.0)
    return alpha


def blob_alpha(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius: float,
    irregularity: float = 0.15,
    aspect: float = 1.0,
    angle: float = 0.0,
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Alpha of one roundish blob, computed only in its bounding window.

    Returns ``(alpha_window, (ys, xs))`` so callers can blend many small blobs cheaply. The radius is
    modulated by a few random angular harmonics so blobs are not perfect discs.
    """
    h, w = shape
    cy, cx = centre
    reach = radius * max(aspect, 1.0) * (1.0 + 2.0 * irregularity) + 2.0
    y0, y1 = max(int(cy - reach), 0), min(int(np.ceil(cy + reach)) + 1, h)
    x0, x1 = max(int(cx - reach), 0), min(int(np.ceil(cx + reach)) + 1, w)
    ys, xs = slice(y0, y1), slice(x0, x1)
    if y1 <= y0 or x1 <= x0:
        return np.zeros((0, 0), dtype=F32), (ys, xs)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(F32)
    dy, dx = yy - cy, xx - cx
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / aspect  # elongate along `angle`
    v = -dx * sa + dy * ca
    d = np.hypot(u, v)
    theta = np.arctan2(v, u)
    k = np.arange(2, 5)
    amp = rng.normal(0.0, irregularity, k.size) / np.sqrt(k)
    phase = rng.uniform(0.0, 2 * np.pi, k.size)
    r_theta = radius * (1.0 + np.tensordot(amp, np.cos(k[:, None, None] * theta + phase[:, None, None]), 1))
    # >= 0.75 px: the pixel nearest the centre (<= 0.71 px away) then reaches alpha >= 0.5, so even the
    # tiniest blob is in the mask instead of being a visible but unlabelled speck
    r_theta = np.maximum(r_theta, 0.75)
    return np.clip(r_theta + 0.5 - d, 0.0, 1.0).astype(F32), (ys, xs)


def speckle(rng: np.random.Generator, shape: tuple[int, int], looks: float, corr: float) -> np.ndarray:
    """Multiplicative, unit-mean gamma speckle (``looks`` = shape parameter, var ~ 1/looks).

    A light blur (``corr`` px) gives the spatial correlation of a real ultrasonic/coherent speckle;
    the mean is restored to 1 afterwards so overall brightness is unchanged.
    """
    g = rng.gamma(looks, 1.0 / looks, shape).astype(F32)
    if corr > 0:
        g = ndimage.gaussian_filter(g, corr)
    return g / g.mean()


def salt_and_pepper(rng: np.random.Generator, img: np.ndarray, amount: float) -> np.ndarray:
    """Set a fraction ``amount`` of pixels to 0 or 1 (dropouts and spikes of a scanning sensor)."""
    u = rng.random(img.shape[:2], dtype=F32)
    out = img.copy()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out
