"""``render_unaligned(config, seed, index)``: one unpaired two-domain sample for colorization.

* Domain A: a grayscale fluorescence-like field: textured nuclei (elliptical, varied size and
  density, chromatin texture), optical blur, a dim background and shot/read noise, bright cells on
  dark, with the binary nucleus mask (0/255). GOWT1-style data are inverted later by the reader
  (``invert_a``), not here.
* Domain B: an H&E-like RGB tissue field made physically: per-pixel stain concentrations
  (hematoxylin in nuclei, eosin in cytoplasm and fibrous stroma, white gaps) mixed by
  Beer-Lambert, ``I = 10 ** -(c_H * OD_H + c_E * OD_E)``, with the stain optical densities of
  ``skimage.color.rgb_from_hed`` (Ruifrok & Johnston).

A and B come from different scenes (independent random streams): the pair is unaligned by
construction. Randomness: ``SeedSequence([seed, index, stream])``, no global state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from microforge.platform.config import ConfigModel, FloatRange, IntRange

__all__ = ["RENDERER_VERSION", "UnalignedConfig", "UnalignedSample", "render_unaligned"]

RENDERER_VERSION = "1"
REFERENCE_AREA = 128 * 128  # counts are per 128 x 128 px and scale with the image area
_STREAM_A, _STREAM_B = 0xA, 0xB


class UnalignedConfig(ConfigModel):
    """Every knob of :func:`render_unaligned`. Counts are per 128 x 128 px; ranges are drawn per
    image (counts) or per object (radii, brightness)."""

    size: int = Field(128, ge=16, le=2048, description="image side in pixels (square)")
    a_cells: IntRange = Field((4, 18), description="nuclei in domain A per 128 x 128 px")
    a_radius_px: FloatRange = Field((5.0, 11.0), description="domain A nucleus radius (px)")
    a_brightness: FloatRange = Field((0.45, 0.95), description="domain A nucleus brightness in [0, 1]")
    a_texture: float = Field(0.35, ge=0, le=1, description="chromatin texture amplitude (fraction of brightness)")
    a_blur_px: float = Field(1.2, ge=0, le=10, description="optical blur sigma (px)")
    a_background: float = Field(0.06, ge=0, le=0.5, description="background level")
    a_photons: float = Field(200.0, gt=0, le=1e6, description="photons at brightness 1 (shot noise)")
    a_read_noise: float = Field(0.01, ge=0, le=0.5, description="Gaussian read noise (fraction of full scale)")
    b_nuclei: IntRange = Field((10, 30), description="nuclei in domain B per 128 x 128 px")
    b_radius_px: FloatRange = Field((3.5, 7.5), description="domain B nucleus radius (px)")
    b_hematoxylin: FloatRange = Field((0.8, 1.4), description="hematoxylin concentration in nuclei")
    b_eosin: FloatRange = Field((0.12, 0.3), description="eosin concentration in cytoplasm and stroma")
    b_gap_fraction: float = Field(0.15, ge=0, lt=1, description="fraction of the field that is white gaps")
    b_noise: float = Field(0.01, ge=0, le=0.5, description="Gaussian noise on the RGB intensities")


@dataclass(frozen=True)
class UnalignedSample:
    """``a``: uint8 (H, W); ``a_gt``: uint8 (H, W) of 0 and 255; ``b``: uint8 (H, W, 3) RGB."""

    a: np.ndarray
    a_gt: np.ndarray
    b: np.ndarray


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def _count(rng: np.random.Generator, lo_hi: tuple[int, int], size: int) -> int:
    scale = size * size / REFERENCE_AREA
    lo, hi = lo_hi
    return int(rng.integers(round(lo * scale), round(hi * scale) + 1))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma,
                             borderType=cv2.BORDER_REFLECT)
    return field / max(float(field.std()), 1e-6)


def _ellipses(rng: np.random.Generator, n: int, size: int, radius: tuple[float, float]):
    """``n`` random ellipses as (centre y, centre x, semi-axes, angle)."""
    for _ in range(n):
        r = rng.uniform(*radius)
        yield (rng.uniform(0, size), rng.uniform(0, size), r * rng.uniform(0.75, 1.0), r * rng.uniform(1.0, 1.3),
               rng.uniform(0, np.pi))


def _ellipse_mask(size: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _render_a(config: UnalignedConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = config.size
    signal = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), bool)
    texture = _smooth_noise(rng, size, 1.0)
    for cy, cx, ry, rx, angle in _ellipses(rng, _count(rng, config.a_cells, size), size, config.a_radius_px):
        nucleus = _ellipse_mask(size, cy, cx, ry, rx, angle) & ~mask  # later nuclei lie beneath
        level = rng.uniform(*config.a_brightness)
        signal[nucleus] = level * (1.0 + config.a_texture * np.clip(texture[nucleus], -2, 2) / 2)
        mask |= nucleus
    if config.a_blur_px > 0:
        signal = cv2.GaussianBlur(signal, (0, 0), config.a_blur_px, borderType=cv2.BORDER_REFLECT)
    signal = np.clip(signal + config.a_background, 0, None)
    image = rng.poisson(signal * config.a_photons) / config.a_photons
    image = image + rng.normal(0.0, config.a_read_noise, image.shape)
    return _to_uint8(image), mask.astype(np.uint8) * 255


def _render_b(config: UnalignedConfig, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import rgb_from_hed

    size = config.size
    od_h, od_e = (row / np.linalg.norm(row) for row in rgb_from_hed[:2])
    coarse = _smooth_noise(rng, size, size / 10)
    tissue = coarse > np.quantile(coarse, config.b_gap_fraction)
    # Fibrous stroma: noise stretched along one direction, mixed with a cellular cytoplasm field.
    fibres = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0),
                              sigmaX=4.0, sigmaY=0.8, borderType=cv2.BORDER_REFLECT)
    fibres = cv2.warpAffine(fibres, cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(0, 180)), 1.0),
                            (size, size), borderMode=cv2.BORDER_REFLECT)
    fibres /= max(float(fibres.std()), 1e-6)
    eosin = rng.uniform(*config.b_eosin) * (1.0 + 0.35 * np.clip(fibres, -2, 2)) * tissue
    hema = 0.05 * tissue.astype(np.float32)  # faint counterstain of cytoplasm
    grain = _smooth_noise(rng, size, 0.8)
    for cy, cx, ry, rx, angle in _ellipses(rng, _count(rng, config.b_nuclei, size), size, config.b_radius_px):
        nucleus = _ellipse_mask(size, cy, cx, ry, rx, angle)
        hema[nucleus] = rng.uniform(*config.b_hematoxylin) * (1.0 + 0.2 * np.clip(grain[nucleus], -2, 2))
        eosin[nucleus] *= 0.3
    hema = cv2.GaussianBlur(hema.astype(np.float32), (0, 0), 0.7, borderType=cv2.BORDER_REFLECT)
    density = np.clip(hema, 0, None)[..., None] * od_h + np.clip(eosin, 0, None)[..., None] * od_e
    rgb = 10.0 ** (-density) + rng.normal(0.0, config.b_noise, density.shape)
    return _to_uint8(rgb)


def render_unaligned(config: UnalignedConfig, seed: int, index: int) -> UnalignedSample:
    """Sample ``index`` of dataset ``seed``: domain A with its mask and an unrelated domain B scene."""
    a, a_gt = _render_a(config, _rng(seed, index, _STREAM_A))
    return UnalignedSample(a, a_gt, _render_b(config, _rng(seed, index, _STREAM_B)))
