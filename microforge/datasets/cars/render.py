"""``render_cars(config, seed, index)``: one 16-bit CARS image of thyroid-like tissue with labels.

Image formation, in signal units (1.0 = a bright wall) and in this order:

1. follicles: centres and radii by greedy dart throwing (``follicle_packing``), irregular
   outlines (random 2nd-4th harmonics); overlapping outlines are split where each pixel lies
   deepest, so pressed neighbours share a wall. The follicle label map is the instance mask;
2. tissue: interstitium (coarse texture), colloid lumens (fine texture), walls = the band within
   ``wall_thickness_px`` of each follicle's boundary (fine texture), the non-resonant offset;
3. lipid droplets: anti-aliased bright discs added anywhere;
4. optics: Gaussian PSF blur;
5. scanning: each line shifted by its jitter (whole px; the mask moves with it) and scaled by its
   stripe gain;
6. detection: Poisson shot noise at ``photons_per_unit``, ADU scale, dark offset, Gaussian read
   noise, rounding and saturation into ``uint16``.

Bright-pixel fraction (``meta["bright_fraction"]``): the background is the interstitium and
colloid pixels of the class map (not walls, not droplets); its level is the 95th percentile of
the final image over those pixels (the ``lower`` order statistic); a pixel is bright when it
exceeds ``BRIGHT_FACTOR`` times that level. The default preset keeps this under 5 %.

Randomness: ``SeedSequence([seed, index])`` spawns one generator per stage (layout, shapes,
texture, droplets, scanning, detection), so e.g. the follicle layout does not depend on the
droplet settings. No global random state is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from . import kernels as K
from .config import MAX_FOLLICLES, CarsConfig

RENDERER_VERSION = "1"
REFERENCE_AREA = 512 * 512  # counts and densities in the config are per 512 x 512 px
BRIGHT_FACTOR = 2.0
BRIGHT_PERCENTILE = 95.0
COARSE_GRAIN_PX = 8  # cell of the coarse (interstitium) noise grid
FINE_GRAIN_PX = 3  # cell of the fine (colloid, wall) noise grid


@dataclass
class CarsSample:
    """A rendered image, its follicle instance mask, one row per follicle, and metadata."""

    image: np.ndarray  # uint16 (size, size)
    mask: np.ndarray  # uint16 (size, size): 0 = no follicle, 1..n = follicle rows[label - 1]
    follicles: list[dict[str, Any]]  # label, area (px), centroid_x, centroid_y (px), touches_border
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable


def _smooth_noise(rng: np.random.Generator, size: int, grain: int) -> np.ndarray:
    """Unit-std noise (float32 (size, size)) correlated over about ``grain`` px."""
    cells = size // grain + 2
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    field_ = cv2.resize(grid, (cells * grain, cells * grain), interpolation=cv2.INTER_CUBIC)[:size, :size]
    std = float(field_.std())
    return field_ / np.float32(std) if std > 0 else field_


def _uniform(rng: np.random.Generator, lohi: tuple[float, float], n: int | None = None):
    return rng.uniform(lohi[0], lohi[1], n)


def _follicles(config: CarsConfig, layout: np.random.Generator, shape: np.random.Generator) -> np.ndarray:
    """The follicle table (rows of K.N_COLUMNS) of the image."""
    scale = config.size * config.size / REFERENCE_AREA
    target = min(int(round(layout.integers(config.follicle_count[0], config.follicle_count[1] + 1) * scale)),
                 MAX_FOLLICLES)
    n_candidates = 8 * target + 16
    xy = layout.uniform(0.0, config.size, (n_candidates, 2))
    radius = _uniform(layout, config.follicle_radius_px, n_candidates)
    kept = K.place_follicles(xy, radius, config.follicle_packing, target)
    n = len(kept)
    fol = np.zeros((n, K.N_COLUMNS))
    fol[:, K.CX], fol[:, K.CY], fol[:, K.RADIUS] = xy[kept, 0], xy[kept, 1], radius[kept]
    amps = shape.standard_normal((n, 3)) * config.follicle_irregularity / np.array([1.0, 1.5, 2.0])
    # Keep the outline star-shaped and positive: the harmonics together bend it by at most 60 %.
    amps *= np.minimum(1.0, 0.6 / np.maximum(np.abs(amps).sum(axis=1, keepdims=True), 1e-12))
    phases = shape.uniform(0.0, 2 * math.pi, (n, 3))
    fol[:, [K.A2, K.A3, K.A4]] = amps
    fol[:, [K.P2, K.P3, K.P4]] = phases
    fol[:, K.THICKNESS] = _uniform(shape, config.wall_thickness_px, n)
    fol[:, K.WALL] = _uniform(shape, config.wall_brightness, n)
    fol[:, K.COLLOID] = _uniform(shape, config.colloid_level, n)
    return fol


def _droplets(config: CarsConfig, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.poisson(config.droplet_density * config.size * config.size / REFERENCE_AREA))
    drops = np.empty((n, 4))
    drops[:, :2] = rng.uniform(0.0, config.size, (n, 2))
    drops[:, 2] = _uniform(rng, config.droplet_radius_px, n)
    drops[:, 3] = _uniform(rng, config.droplet_brightness, n)
    return drops


def bright_fraction(image: np.ndarray, classes: np.ndarray) -> tuple[float, float]:
    """(fraction of bright pixels, background level): see the module doc."""
    level, bright = K.bright_stats(image, classes, K.COLLOID_CLASS, BRIGHT_PERCENTILE, BRIGHT_FACTOR)
    return bright / image.size, level


def _follicle_rows(mask: np.ndarray, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Relabel the mask to 1..m over the follicles still visible, and their rows."""
    count, sx, sy = K.label_stats(mask, n)
    visible = np.flatnonzero(count[1:]) + 1
    if len(visible) < n:
        lut = np.zeros(n + 1, np.uint16)
        lut[visible] = np.arange(1, len(visible) + 1, dtype=np.uint16)
        mask = lut[mask]
    edge = np.zeros(n + 1, bool)  # indexed by the new labels
    for line in (mask[0], mask[-1], mask[:, 0], mask[:, -1]):
        edge[np.unique(line)] = True
    rows = []
    for new, old in enumerate(visible.tolist(), start=1):
        rows.append({
            "label": new,
            "area": int(count[old]),
            "centroid_x": round(float(sx[old] / count[old]), 3),
            "centroid_y": round(float(sy[old] / count[old]), 3),
            "touches_border": bool(edge[new]),
        })
    return mask, rows


def render_cars(config: CarsConfig | Mapping[str, Any], seed: int, index: int) -> CarsSample:
    """Render image ``index`` of the dataset ``seed`` (non-negative integers); a pure function.

    Returns:
        CarsSample: ``image`` uint16 (size, size); ``mask`` uint16 follicle labels 1..n;
        ``follicles`` one row per label (label, area, centroid_x, centroid_y, touches_border);
        ``meta`` (JSON-serialisable): n_follicles, n_droplets, bright_fraction,
        background_level, bright_level, mean, saturated_fraction.

    Raises:
        ConfigError: ``config`` is not a valid CarsConfig (a mapping is validated first).
    """
    config = CarsConfig.load(config)
    size = config.size
    layout, shape, texture, droplet_rng, scan_rng, detect_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(6))

    fol = _follicles(config, layout, shape)
    label = K.rasterize_follicles(size, fol)
    depth = cv2.distanceTransform(K.boundary_map(label), cv2.DIST_L2, 5)
    coarse = _smooth_noise(texture, size, COARSE_GRAIN_PX)
    fine = _smooth_noise(texture, size, FINE_GRAIN_PX)
    signal, classes = K.compose_tissue(label, depth, fol, coarse, fine, config.interstitial_level,
                                       config.interstitial_texture, config.wall_texture, config.colloid_texture,
                                       config.nonresonant_offset)
    drops = _droplets(config, droplet_rng)
    K.draw_droplets(signal, classes, drops)
    if config.psf_sigma_px > 0:
        signal = cv2.GaussianBlur(signal, (0, 0), config.psf_sigma_px, borderType=cv2.BORDER_REFLECT)

    shifts = np.rint(scan_rng.standard_normal(size) * config.line_jitter_px).astype(np.int64)
    gains = 1.0 + scan_rng.standard_normal(size) * config.stripe_gain
    raw = detect_rng.bit_generator.random_raw(size * size).reshape(size, size)
    image, mask, classes = K.scan_and_detect(
        signal, label, classes, shifts, gains, raw, config.photons_per_unit,
        config.adu_per_unit / config.photons_per_unit, config.dark_offset_adu, config.read_noise_adu,
        float(config.saturation_adu))

    mask, rows = _follicle_rows(mask, len(fol))
    fraction, level = bright_fraction(image, classes)
    meta = {
        "n_follicles": len(rows),
        "n_droplets": len(drops),
        "bright_fraction": fraction,
        "background_level": level,
        "bright_level": BRIGHT_FACTOR * level,
        "mean": float(image.mean()),
        "saturated_fraction": float(np.count_nonzero(image >= config.saturation_adu)) / image.size,
    }
    return CarsSample(image, mask, rows, meta)
