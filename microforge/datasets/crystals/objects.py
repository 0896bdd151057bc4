"""Random draws of the image's objects (rods, fused arms, ghosts, debris) as parameter arrays.

Everything is drawn vectorised with numpy from the Generator it is given; the kernels in
:mod:`.kernels` then draw the arrays. Rods, ghosts and debris use separate generators, so turning
ghosts or debris on or off leaves the labelled rods unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernels as K
from .config import CrystalConfig
from .schedule import StageParams

# Samples of a distortion profile along the rod (u in [-1, 1]); the kernel interpolates them.
PROFILE_SAMPLES = 64
GHOST_MODES = ("wavy", "kink", "noisy", "straight")


def _uniform(rng: np.random.Generator, bounds, n: int) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], n)


def _shading(rng: np.random.Generator, config: CrystalConfig, delta: np.ndarray, gain_mult: float,
             mult_mix: float, profile: np.ndarray) -> np.ndarray:
    """Fill the shading columns of rods whose geometry and body delta are known."""
    n = len(delta)
    rods = np.zeros((n, K.N_COLUMNS))
    rods[:, K.DELTA] = delta * (1.0 + 0.05 * rng.standard_normal(n))
    rods[:, K.GAIN] = _uniform(rng, config.shadow_gain, n) * gain_mult
    rods[:, K.SHADOW_WIDTH] = _uniform(rng, config.shadow_width_mult, n)
    rods[:, K.BIAS] = _uniform(rng, config.shadow_bias, n)
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    rods[:, K.OFFSET] = _uniform(rng, config.shadow_offset_px, n) * side
    rods[:, K.POLARITY] = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    rods[:, K.MULT_MIX] = mult_mix
    rods[:, K.PROFILE] = profile
    return rods


def _place(rods: np.ndarray, cx, cy, length, width, angle) -> np.ndarray:
    rods[:, K.CX], rods[:, K.CY], rods[:, K.LENGTH], rods[:, K.WIDTH], rods[:, K.ANGLE] = cx, cy, length, width, angle
    return rods


def sample_rod_count(rng: np.random.Generator, stage: StageParams) -> int:
    """Number of crystals of the image (ghosts are counted relative to it even with rods off)."""
    return int(rng.integers(stage.n_rods[0], stage.n_rods[1], endpoint=True))


def sample_rods(rng: np.random.Generator, config: CrystalConfig, stage: StageParams, n: int) -> tuple[np.ndarray, dict]:
    """The ``n`` labelled crystals as rows of boxes (a fused crystal contributes one row per arm).

    Returns the (boxes, N_COLUMNS) array and counts ``n_rods`` (crystals), ``n_fused``, ``n_arms``.
    """
    w, h = config.width, config.height
    length = _uniform(rng, stage.rod_len_px, n)
    width = np.maximum(2.0, length * _uniform(rng, stage.rod_aspect, n))
    cx = rng.uniform(0.05 * w, 0.95 * w, n)
    cy = rng.uniform(0.05 * h, 0.95 * h, n)
    angle = rng.uniform(-math.pi / 2, math.pi / 2, n)
    delta = _uniform(rng, stage.rod_delta, n)
    fused = rng.random(n) < stage.p_fused

    # A fused crystal is a bundle of 2-5 arms around its angle, each with perturbed length, width,
    # angle (spread 10-55 degrees) and a small sideways shift; the crystal itself is not drawn.
    arms = rng.integers(2, 5, fused.sum(), endpoint=True)
    parent = np.repeat(np.flatnonzero(fused), arms)
    spread = np.repeat(np.radians(rng.uniform(10.0, 55.0, len(arms))), arms)
    m = len(parent)
    arm_angle = angle[parent] + rng.normal(0.0, 1.0, m) * spread * 0.25
    arm_len = np.maximum(8.0, rng.normal(length[parent], 0.25 * length[parent]))
    arm_width = np.maximum(3.0, rng.normal(width[parent], 0.25 * width[parent]))
    shift = rng.uniform(0.0, 0.25, m) * width[parent]
    arm_cx = cx[parent] - shift * np.sin(arm_angle)
    arm_cy = cy[parent] + shift * np.cos(arm_angle)

    single = ~fused
    geometry = [np.concatenate([a[single], b]) for a, b in
                ((cx, arm_cx), (cy, arm_cy), (length, arm_len), (width, arm_width), (angle, arm_angle))]
    all_delta = np.concatenate([delta[single], delta[parent]])
    rods = _place(_shading(rng, config, all_delta, 1.0, 0.0, -1.0), *geometry)
    return rods, {"n_rods": n, "n_fused": int(fused.sum()), "n_arms": m}


def _smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """(n, PROFILE_SAMPLES) smooth noise along u, mean 0 and std 1 per row; ``corr`` is the
    correlation length as a fraction of the rod (Gaussian sigma corr/8 in u, as the original tool)."""
    return _standardise(_smooth(rng.standard_normal((n, PROFILE_SAMPLES)), corr))


def _smooth(x: np.ndarray, corr: float) -> np.ndarray:
    u = np.linspace(-1.0, 1.0, PROFILE_SAMPLES)
    sigma = max(corr / 8.0, 1e-3)
    kernel = np.exp(-0.5 * ((u[:, None] - u[None, :]) / sigma) ** 2)
    return x @ (kernel / kernel.sum(axis=1, keepdims=True)).T


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + 1e-6)


def sample_ghosts(rng: np.random.Generator, config: CrystalConfig, stage: StageParams,
                  n_rods: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unlabelled ghost rods: weaker, distorted along their length (wavy, kink, noisy or straight),
    bent, with jittered width/edges and ragged edges. Returns rods, profiles and counts."""
    w, h = config.width, config.height
    n = int(round(n_rods * config.ghost_fraction)) if config.ghost_enable else 0
    len_hi = stage.rod_len_px[1]
    length = rng.uniform(min(12.0, len_hi), len_hi, n)
    width = np.maximum(2.0, length * rng.uniform(0.01, max(0.01, min(0.8, 2.0 * stage.rod_aspect[1])), n))
    cx = rng.uniform(0.05 * w, 0.95 * w, n)
    cy = rng.uniform(0.05 * h, 0.95 * h, n)
    angle = rng.uniform(-math.pi / 2, math.pi / 2, n)
    delta = _uniform(rng, config.ghost_delta_rng, n)
    rods = _shading(rng, config, delta, config.ghost_gain_mult, config.ghost_mult_mix, np.arange(n))
    _place(rods, cx, cy, length, width, angle)

    u = np.linspace(-1.0, 1.0, PROFILE_SAMPLES)[None, :]
    mode = rng.integers(0, len(GHOST_MODES), n)[:, None]
    freq = rng.uniform(0.7, 1.6, (n, 1)) * math.pi
    phase = rng.uniform(0.0, 2 * math.pi, (n, 1))
    kink_at = rng.uniform(-0.3, 0.3, (n, 1))
    L = length[:, None]
    wavy = (0.6 + 0.004 * L) * (0.6 * np.sin(freq * u + phase) + 0.4 * np.sin(1.8 * freq * u + 2 * phase))
    kink = (1.0 + 0.006 * L) * 0.5 * np.tanh((u - kink_at) * 6.0)
    noisy = _smooth_noise(rng, n, 0.22)
    warp = np.select([mode == 0, mode == 1, mode == 2], [wavy, kink, noisy], 0.0)
    bow = rng.uniform(*config.ghost_curve_kappa_range, (n, 1)) * L
    bow += config.ghost_curvature * 0.25 * width[:, None] * np.where(rng.random((n, 1)) < 0.5, 1.0, -1.0)
    warp = warp + bow * (u * u - 1.0 / 3.0)

    profiles = np.empty((n, K.N_PROFILES, PROFILE_SAMPLES), np.float32)
    profiles[:, K.WARP] = warp
    profiles[:, K.WIDTH_F] = np.maximum(0.2, 1.0 + config.ghost_width_jit_amp * _smooth_noise(rng, n, 0.22))
    profiles[:, K.OFFSET_F] = 1.0 + config.ghost_offset_jit_amp * _smooth_noise(rng, n, 0.25)
    profiles[:, K.EDGE_F] = np.maximum(0.0, 1.0 + config.ghost_edge_jit_amp * _smooth_noise(rng, n, 0.22))
    # Ragged edges: a smoothed keep/drop mask mapped to [0.25, 1], so edges fade in patches.
    keep = _smooth((rng.random((n, PROFILE_SAMPLES)) > config.ghost_ragged_p).astype(float), config.ghost_ragged_corr)
    lo, span = keep.min(axis=1, keepdims=True), np.ptp(keep, axis=1, keepdims=True)
    ragged = 0.25 + 0.75 * (keep - lo) / (span + 1e-6)
    profiles[:, K.RAGGED] = ragged if config.ghost_ragged_p > 0 else 1.0
    counts = {name: int((mode == i).sum()) for i, name in enumerate(GHOST_MODES)}
    return rods, profiles, {"n_ghosts": n, "ghost_modes": counts}


def sample_debris(rng: np.random.Generator, config: CrystalConfig) -> np.ndarray:
    """Debris items, (n, 6) rows ``x, y, delta, size, is_dash, angle`` (see kernels.draw_debris);
    n is Poisson with mean ``debris_rate * width * height``."""
    w, h = config.width, config.height
    n = int(rng.poisson(config.debris_rate * w * h))
    items = np.empty((n, 6))
    items[:, 0] = rng.integers(0, w, n)
    items[:, 1] = rng.integers(0, h, n)
    items[:, 2] = _uniform(rng, config.debris_int_delta, n)
    items[:, 3] = rng.integers(config.debris_size_px[0], config.debris_size_px[1], n, endpoint=True)
    items[:, 4] = rng.random(n) < config.debris_dash_prob
    items[:, 5] = rng.uniform(-math.pi / 2, math.pi / 2, n)
    return items
