"""Render stages that widen the blob recipe beyond the reference one (see :mod:`.blobs`).

Each stage is off at the :class:`~microforge.datasets.blobs.BlobConfig` defaults, and draws from
its own stream (the fourth child of ``SeedSequence([seed, index])``), so a default config renders
the reference images byte for byte and turning a stage on never moves the silhouette, dot or
noise streams. Order in :func:`~microforge.datasets.blobs.render_blob`:

1. :func:`draw_style`: per-image background level, dot contrast, texture, jaggedness, blur and
   bit depth (only the draws of the stages that are on);
2. :func:`jagged_radii`: radial perturbation of the outline (the mask follows the outline);
3. :func:`smooth_field`: a smooth random texture added to the clean image;
4. Gaussian blur of the clean image (the optics), before the noise;
5. with ``pixel_scale`` above 1, stages 1-4 and the noise run on a grid that many times finer,
   and :func:`to_model_grid` area-averages the result down to ``size`` (the mask: pixels at least
   half inside), as an image from a camera with finer pixels looks once resized to the model's
   scale: the noise averaged, dots and blur fewer pixels across;
6. after the noise, :func:`quantise`: per-image percentile stretch to [0, 1] and rounding to the
   8- or 16-bit grid (what a camera file normalised for display holds).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = ["dot_count_and_radii", "draw_style", "jagged_radii", "quantise", "smooth_field", "style_enabled",
           "texture_and_blur", "to_model_grid"]

# Harmonics of the outline perturbation: above the spline's own (<= control_points / 2), below
# the pixel grid, so the outline looks ragged rather than lumpy.
_JAG_HARMONICS = (6, 33)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def style_enabled(config: Any) -> bool:
    """Whether any stage of this module is on (else the renderer skips them all)."""
    return (config.background_range is not None or tuple(config.dot_contrast) != (1.0, 1.0)
            or config.texture[1] > 0 or config.jaggedness[1] > 0 or config.blur[1] > 0 or bool(config.bit_depths)
            or config.pixel_scale[1] > 1.0)


def draw_style(config: Any, rng: np.random.Generator) -> dict[str, Any]:
    """The per-image settings of the stages that are on (JSON-serialisable, recorded in ``meta``)."""
    style: dict[str, Any] = {
        "background": _uniform(rng, config.background_range) if config.background_range else config.background,
        "dot_contrast": _uniform(rng, config.dot_contrast) if tuple(config.dot_contrast) != (1.0, 1.0) else 1.0,
        "texture": 0.0, "texture_length": 0.0, "jaggedness": 0.0, "blur": 0.0, "bit_depth": None, "pixel_scale": 1.0,
    }
    if config.texture[1] > 0:
        style["texture"] = _uniform(rng, config.texture)
        style["texture_length"] = _uniform(rng, config.texture_length)
    if config.jaggedness[1] > 0:
        style["jaggedness"] = _uniform(rng, config.jaggedness)
    if config.blur[1] > 0:
        style["blur"] = _uniform(rng, config.blur)
    if config.bit_depths:
        style["bit_depth"] = int(config.bit_depths[int(rng.integers(len(config.bit_depths)))])
    if config.pixel_scale[1] > 1.0:  # drawn after the others: it leaves this function's earlier draws as they were
        finer = rng.random() < config.pixel_scale_prob
        style["pixel_scale"] = _uniform(rng, config.pixel_scale) if finer else 1.0
    return style


def jagged_radii(theta: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Factor ``1 + amplitude * h(theta)`` on the outline radius: ``h`` a sum of random-phase
    harmonics with 1/k amplitudes, scaled to peak at 1, so ``amplitude`` is the largest relative
    dent or spike."""
    k = np.arange(*_JAG_HARMONICS)
    weights = rng.standard_normal(k.size) / k
    phases = rng.uniform(0.0, 2.0 * math.pi, k.size)
    h = (weights[:, None] * np.cos(k[:, None] * theta[None, :] + phases[:, None])).sum(axis=0)
    return 1.0 + amplitude * h / max(float(np.abs(h).max()), 1e-12)


def smooth_field(size: int, length: float, rng: np.random.Generator) -> np.ndarray:
    """float32 ``(size, size)`` zero-mean, unit-std random field with correlation length
    ``length * size`` pixels (white noise on a coarse grid, resized bicubically)."""
    cells = int(np.clip(round(1.0 / max(length, 1e-3)), 2, size))
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def quantise(image: np.ndarray, bits: int, p_lo: float, p_hi: float) -> np.ndarray:
    """The image percentile-stretched to [0, 1] (the ``percentile`` transform's stretch) and
    rounded to ``2**bits - 1`` levels, as float32 in [0, 1]."""
    from microforge.platform.transforms import percentile_stretch

    stretched, _ = percentile_stretch(image, p_lo, p_hi, False)
    levels = np.float32(2**bits - 1)
    return (np.round(stretched * levels) / levels).astype(np.float32)


def to_model_grid(size: int, fine: int, image: np.ndarray, clean: np.ndarray, mask: np.ndarray,
                  control_points: np.ndarray, dots: np.ndarray) -> tuple[np.ndarray, ...]:
    """A render on the ``fine`` x ``fine`` grid brought to ``size`` x ``size``: images
    area-averaged, the mask where at least half of a pixel was inside, pixel-centre coordinates
    (control points, dot x, y) and dot radii scaled."""
    factor = size / fine

    def area(array: np.ndarray) -> np.ndarray:
        return cv2.resize(array.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)

    dots = dots.copy()
    dots[:, :2] = (dots[:, :2] + 0.5) * factor - 0.5
    dots[:, 2] *= factor
    return (area(image), area(clean), (area(mask) >= 0.5).astype(np.uint8), (control_points + 0.5) * factor - 0.5,
            dots)


def dot_count_and_radii(config: Any, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Dot count and radii: the reference draws unless ``dot_radius_relative``/``dot_coverage`` are on."""
    if config.dot_radius_relative is None and config.dot_coverage is None:  # the reference draws, in order
        n = int(rng.integers(config.dots[0], config.dots[1] + 1))
        return n, rng.uniform(*config.dot_radius, n)
    area = float(mask.sum())
    lo, hi = config.dot_radius
    if config.dot_radius_relative is not None:
        equivalent = math.sqrt(area / math.pi)
        lo, hi = (max(0.5, f * equivalent) for f in config.dot_radius_relative)
    if config.dot_coverage is not None:
        mean_square = (lo * lo + lo * hi + hi * hi) / 3.0  # E[r^2] of r ~ U(lo, hi)
        n = int(np.clip(round(rng.uniform(*config.dot_coverage) * area / (math.pi * mean_square)), 1, 10_000))
    else:
        n = int(rng.integers(config.dots[0], config.dots[1] + 1))
    return n, rng.uniform(lo, hi, n)


def texture_and_blur(clean: np.ndarray, style: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Stages 3 and 4 on the clean image."""
    if style["texture"] > 0:
        clean = clean + np.float32(style["texture"]) * smooth_field(len(clean), style["texture_length"], rng)
        clean = np.clip(clean, 0.0, 1.0, out=clean)
    if style["blur"] > 0:
        clean = cv2.GaussianBlur(clean, (0, 0), style["blur"])
    return clean.astype(np.float32, copy=False)
