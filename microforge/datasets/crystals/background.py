"""Background of a DIC micrograph: gray grain, illumination ramp, low-frequency illumination,
vignette and the relief of a smooth random height field.

Every term but the grain is smooth, so they are computed on a grid up to 16x coarser and
resized in the one pass that also adds the grain: the cost hardly depends on the blur sigmas.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .config import CrystalConfig
from .kernels import grain_times_plus


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _coarse_factor(sigmas: list[float]) -> int:
    """Largest reduction that keeps every blur sigma >= 3 coarse pixels (1 to 16)."""
    return int(min([16.0] + [max(1.0, s / 3.0) for s in sigmas]))


def render_background(config: CrystalConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The background as float32 (H, W) gray levels, and the per-image values drawn."""
    h, w = config.height, config.width
    meta: dict = {}
    relief_sigma = float(rng.uniform(*config.relief_field_sigma_px))
    illum_on = config.illum_ampl > 0
    illum_sigma = max(config.illum_sigma, 0.8)  # the original's 3x3 kernel when sigma = 0
    sigmas = ([relief_sigma] if config.relief_field_enable else []) + ([illum_sigma] if illum_on else [])
    f = _coarse_factor(sigmas)
    hc, wc = max(2, math.ceil(h / f)), max(2, math.ceil(w / f))
    # Full-resolution pixel coordinates of the coarse samples, as cv2.resize maps them.
    xs = (np.arange(wc, dtype=np.float32) + 0.5) * (w / wc) - 0.5
    ys = (np.arange(hc, dtype=np.float32) + 0.5) * (h / hc) - 0.5

    smooth = np.zeros((hc, wc), np.float32)
    if config.tilt_enable:
        ang = math.radians(rng.uniform(*config.tilt_dir_deg))
        ptp = float(rng.uniform(*config.tilt_ptp))
        # Ramp over [-1, 1] image coordinates shifted by tilt_center, scaled to peak-to-peak ptp
        # (a linear ramp peaks at a corner).
        x_ends = (-1.0 - 2 * config.tilt_center[0], 1.0 - 2 * config.tilt_center[0])
        y_ends = (-1.0 - 2 * config.tilt_center[1], 1.0 - 2 * config.tilt_center[1])
        xn = x_ends[0] + 2.0 * xs / max(w - 1, 1)
        yn = y_ends[0] + 2.0 * ys / max(h - 1, 1)
        ramp = math.cos(ang) * xn[None, :] + math.sin(ang) * yn[:, None]
        peak = max(abs(math.cos(ang) * x + math.sin(ang) * y) for x in x_ends for y in y_ends)
        smooth += (0.5 * ptp / (peak + 1e-6)) * ramp
        meta.update(tilt_dir_deg=math.degrees(ang), tilt_ptp=ptp)
    if illum_on:
        field = _blur(rng.standard_normal((hc, wc), dtype=np.float32), illum_sigma / f)
        lo, span = float(field.min()), float(np.ptp(field))
        smooth += config.illum_ampl * ((field - lo) / (span + 1e-6) - 0.5) * 2.0

    lo, hi = config.bg_gray_range
    smooth += lo
    # Grain: every pixel uniform in [lo, hi] (256 levels from one random byte: cheap and fine).
    grain = rng.integers(0, 256, (h, w), dtype=np.uint8)
    scale = np.full((hc, wc), (hi - lo) / 255.0, np.float32)
    if config.vignette_strength > 0:
        r2 = ((xs - (w - 1) / 2.0) ** 2)[None, :] + ((ys - (h - 1) / 2.0) ** 2)[:, None]
        vignette = 1.0 - config.vignette_strength * r2 / (((w - 1) / 2.0) ** 2 + ((h - 1) / 2.0) ** 2 + 1e-6)
        smooth *= vignette
        scale *= vignette
    if config.relief_field_enable:
        smooth += _relief(config, rng, relief_sigma, f, hc, wc, meta)
    return grain_times_plus(grain, scale, smooth), meta


def _relief(config: CrystalConfig, rng: np.random.Generator, sigma: float, f: int, hc: int, wc: int,
            meta: dict) -> np.ndarray:
    """DIC relief: the gradient of a smooth random height along the shear direction, unit std."""
    height = _blur(rng.standard_normal((hc, wc), dtype=np.float32), sigma / f)
    phi = math.radians(rng.uniform(*config.relief_field_dir_deg))
    gain = float(rng.uniform(*config.relief_field_gain))
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    shear = math.cos(phi) * gx + math.sin(phi) * gy
    shear /= shear.std() + 1e-6
    if config.relief_field_extra_blur > 0:
        shear = _blur(shear, config.relief_field_extra_blur / f)
    meta.update(relief_sigma_px=sigma, relief_dir_deg=math.degrees(phi), relief_gain=gain)
    return gain * shear
