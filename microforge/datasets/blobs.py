"""Delineation data: an organic silhouette filled with dots, under one of five noise types.

The task is to recover the silhouette (the ground-truth mask) from the dots inside it.

Geometry (x to the right, y down, origin at the top-left corner of the top-left pixel, so the
centre of pixel ``(row, col)`` is ``(col + 0.5, row + 0.5)``):

* **Silhouette.** ``n`` control points (``control_points`` range) at increasing angles around a
  centre (equal angular steps, each jittered by up to ``angle_jitter`` of a step) and radii
  ``R * U(1 - radius_variation, 1)``, with ``R = U(shape_radius) * size / 2``. The outline is the
  closed Catmull-Rom spline through them taken in polar coordinates, ``r(theta)``: it passes
  through every control point and, being a single-valued radius around the centre, is always a
  simple star-shaped curve, so the filled mask is one connected region without holes (pixel-
  level slivers of extreme settings are repaired, see ``_fill``). It is
  scaled down if its overshoot would leave the image and placed at a random position where it
  fits entirely, then filled with ``cv2.fillPoly`` at 1/16-pixel precision.
* **Dots.** ``n_dots`` dots (``dots`` range) with radii ``U(dot_radius)`` on a jittered grid
  laid over the part of the mask deep enough to hold the largest dot whole (distance to the
  outside >= largest radius + 1.25 px). The grid spacing gives about ``n_dots`` cells there; each
  grid point moves by ``U(-0.5, 0.5) * dot_jitter * spacing`` per axis (0 = regular grid,
  1 = one dot anywhere in each cell); the points that remain deep inside are kept, ``n_dots`` of
  them at random, topped up with uniform positions in that region if too few. If the shape is
  too thin for the largest dot, the dots sit on its most interior pixels and are cut at the edge.
  Dots are anti-aliased discs, composited by maximum.
* **Image.** ``background`` outside, ``background + fill_intensity`` inside the shape, an
  optional 1-pixel inner outline at ``outline_intensity``, dots at ``U(dot_intensity)``; with
  ``polarity="dark"`` the clean image is inverted (dark dots on a bright field). Noise is then
  applied by :func:`microforge.datasets.noise.apply_noise` and the realised SNR recorded.

Randomness: ``SeedSequence([seed, index])`` is spawned into child streams for the silhouette,
the dots and the noise, so noise settings never change the shape or dots of a given
``(seed, index)``, and dot settings never change the shape; a fourth stream drives the wider
randomisation of :mod:`microforge.datasets.blob_style` (all off by default; presets in
:mod:`microforge.datasets.blob_presets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from microforge.platform.config import ConfigModel, FloatRange, IntRange
from microforge.platform.errors import ConfigError

from . import blob_style
from .noise import NOISE_TYPES, apply_noise, resolve_noise_type, snr_db

__all__ = ["RENDERER_VERSION", "BlobConfig", "BlobSample", "render_blob", "render_blob_batch"]

RENDERER_VERSION = "blobs-1"

_SHIFT_BITS = 4  # cv2.fillPoly sub-pixel precision: coordinates in 1/16 pixel
_EDGE_MARGIN = 1.0  # px kept free between the silhouette and the image border
# Distance a dot's radius must stay from the outside: its anti-aliased rim (0.5 px) plus the
# offset of its sub-pixel centre from the pixel centre where the distance is read (<= 0.71 px).
_DOT_MARGIN = 1.25


def _within(value: tuple, lo: float, hi: float, what: str) -> tuple:
    if value[0] < lo or value[1] > hi:
        raise ValueError(f"{what} must lie within [{lo}, {hi}], got {list(value)}")
    return value


class BlobConfig(ConfigModel):
    """Settings of the blob-and-dots renderer. Ranges are ``[lo, hi]`` sampled per image."""

    size: int = Field(512, ge=32, le=4096, description="Image height and width in pixels.")
    control_points: IntRange = Field((5, 15), description="Number of spline control points of the silhouette.")
    shape_radius: FloatRange = Field(
        (0.55, 0.85), description="Outer radius of the silhouette as a fraction of half the image size."
    )
    radius_variation: float = Field(
        0.45, ge=0.0, le=0.8, description="Control-point radii are R * U(1 - radius_variation, 1)."
    )
    angle_jitter: float = Field(
        0.3, ge=0.0, le=0.45, description="Control-point angle jitter as a fraction of the angular step."
    )
    dots: IntRange = Field((15, 80), description="Number of dots inside the silhouette.")
    dot_radius: FloatRange = Field((2.0, 6.0), description="Dot radius in pixels.")
    dot_jitter: float = Field(
        0.8, ge=0.0, le=1.0, description="Dot displacement from the grid as a fraction of the grid spacing."
    )
    background: float = Field(0.0, ge=0.0, le=1.0, description="Clean intensity outside the silhouette.")
    fill_intensity: float = Field(
        0.0, ge=0.0, le=1.0, description="Faint fill added inside the silhouette (0 = dots only)."
    )
    outline_intensity: float = Field(
        0.0, ge=0.0, le=1.0, description="Intensity of a 1-pixel inner outline (0 = none)."
    )
    dot_intensity: FloatRange = Field((0.6, 1.0), description="Clean dot intensity.")
    polarity: Literal["bright", "dark"] = Field(
        "bright", description="'bright': bright dots on dark; 'dark': the clean image inverted."
    )
    noise_types: tuple[str, ...] = Field(
        NOISE_TYPES,
        description="Allowed noise types: gaussian, poisson, salt_and_pepper, speckle, mixed. "
        "'mixed' is chosen with probability mixed_prob and combines 2-3 of the listed base types "
        "(all four if it is listed alone, then every image gets compound noise).",
    )
    noise_scale: float = Field(
        1.0, ge=0.0, le=1.0, description="Noise strength limit: parameters drawn from the weakest "
        "noise_scale fraction of each type's range (see microforge.datasets.noise)."
    )
    mixed_prob: float = Field(0.2, ge=0.0, le=1.0, description="Probability of compound ('mixed') noise.")
    # Wider randomisation (microforge.datasets.blob_style); every default leaves renders unchanged.
    dot_radius_relative: Optional[FloatRange] = Field(
        None, description="Dot radius as a fraction of the silhouette's equivalent radius sqrt(area / pi); "
        "replaces dot_radius (at least 0.5 px).")
    dot_coverage: Optional[FloatRange] = Field(
        None, description="Share of the silhouette area covered by dots; sets the dot count instead of 'dots'.")
    dot_contrast: FloatRange = Field((1.0, 1.0), description="Per-image factor on the dots' height above the interior.")
    background_range: Optional[FloatRange] = Field(None, description="Per-image background level (replaces background).")
    texture: FloatRange = Field((0.0, 0.0), description="Std of a smooth random field added to the clean image.")
    texture_length: FloatRange = Field((0.05, 0.25), description="Texture correlation length, fraction of the size.")
    jaggedness: FloatRange = Field((0.0, 0.0), description="Largest radial dent/spike of the outline as a fraction "
                                   "of its radius (harmonics 6-32; 0 = the smooth spline). The mask follows.")
    blur: FloatRange = Field((0.0, 0.0), description="Gaussian blur sigma (px) of the clean image, before the noise.")
    bit_depths: tuple[int, ...] = Field((), description="Percentile-normalise each noisy image and quantise it to "
                                        "one of these bit depths (8, 16); empty: unquantised floats.")
    percentile_clip: FloatRange = Field((0.5, 99.5), description="[p_lo, p_hi] percentiles of that normalisation.")
    pixel_scale: FloatRange = Field((1.0, 1.0), description="Render on a grid this many times finer (per image) "
                                    "and area-average the noisy image down to size: a camera whose pixels are "
                                    "finer than the model's, so noise averages out (px settings are fine-grid px).")
    pixel_scale_prob: float = Field(1.0, ge=0.0, le=1.0, description="Share of images rendered on that finer grid "
                                    "(the others on the size x size grid).")

    @field_validator("control_points")
    @classmethod
    def _check_control_points(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _within(v, 3, 64, "control_points")

    @field_validator("shape_radius")
    @classmethod
    def _check_shape_radius(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"shape_radius must be > 0, got {list(v)}")
        return _within(v, 0.0, 1.0, "shape_radius")

    @field_validator("dots")
    @classmethod
    def _check_dots(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _within(v, 1, 10_000, "dots")

    @field_validator("dot_radius")
    @classmethod
    def _check_dot_radius(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _within(v, 0.5, 256.0, "dot_radius")

    @field_validator("dot_intensity")
    @classmethod
    def _check_dot_intensity(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _within(v, 0.0, 1.0, "dot_intensity")

    @field_validator("dot_radius_relative", "dot_coverage")
    @classmethod
    def _check_relative(cls, v: Any) -> Any:
        if v is not None and (v[0] <= 0 or v[1] > 0.8):
            raise ValueError(f"must lie within (0, 0.8], got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_style(self) -> "BlobConfig":
        for name, lo, hi in (("dot_contrast", 0.05, 4.0), ("background_range", 0.0, 1.0), ("texture", 0.0, 0.5),
                             ("texture_length", 0.001, 1.0), ("jaggedness", 0.0, 0.4), ("blur", 0.0, 32.0),
                             ("percentile_clip", 0.0, 100.0), ("pixel_scale", 1.0, 8.0)):
            value = getattr(self, name)
            if value is not None:
                _within(value, lo, hi, name)
        if any(bits not in (8, 16) for bits in self.bit_depths):
            raise ValueError(f"bit_depths may hold 8 and 16, got {list(self.bit_depths)}")
        return self

    @field_validator("noise_types", mode="before")
    @classmethod
    def _check_noise_types(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = (v,)
        if not v:
            raise ValueError(f"noise_types is empty; choose from {', '.join(NOISE_TYPES)}")
        names = tuple(resolve_noise_type(str(name)) for name in v)
        if len(set(names)) != len(names):
            raise ValueError(f"noise_types lists a type twice: {list(names)}")
        base = [n for n in names if n != "mixed"]
        if "mixed" in names and len(base) == 1:
            raise ValueError(
                f"'mixed' needs at least 2 base types to combine, got only '{base[0]}': "
                "add another type or remove 'mixed'"
            )
        return names

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "BlobConfig":
        background = self.background_range[1] if self.background_range else self.background
        interior = background + self.fill_intensity
        if interior > 1.0:
            raise ValueError(f"background + fill_intensity must be <= 1, got {interior:g}")
        if self.dot_intensity[0] <= interior:
            raise ValueError(
                f"dot_intensity {list(self.dot_intensity)} must be above background + fill_intensity "
                f"({interior:g}) or the dots are invisible: raise dot_intensity or lower background/fill_intensity"
            )
        if self.dot_radius_relative is None and 2 * self.dot_radius[1] >= self.size:
            raise ValueError(f"dot_radius {list(self.dot_radius)} does not fit an image of size {self.size}")
        return self


@dataclass(frozen=True, eq=False)
class BlobSample:
    """One rendered sample.

    Attributes:
        image: float32 ``(H, W)`` in [0, 1], the noisy input.
        clean: float32 ``(H, W)`` in [0, 1], the same image without noise.
        mask: uint8 ``(H, W)``, 1 inside the silhouette, 0 outside (the ground truth).
        control_points: float64 ``(n, 2)``, the ``(x, y)`` points the outline passes through.
        dots: float32 ``(n_dots, 3)``, ``(x, y, radius)`` of each dot.
        meta: JSON-serialisable dict: seed, index, size, n_control_points, n_dots,
            mask_fraction, noise_type, noise (parameters, see ``noise.apply_noise``), snr_db,
            noise_scale, mixed_prob.
    """

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    control_points: np.ndarray
    dots: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _periodic_catmull_rom(knots: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluate the closed (period 2 pi) Catmull-Rom spline through ``(knots, values)`` at ``t``.

    ``knots`` are increasing and span less than one period; tangents are the central
    differences of the neighbours (non-uniform knots), so the curve is C1 and interpolating.
    """
    n = len(knots)
    period = 2.0 * math.pi
    k = np.concatenate([knots[-1:] - period, knots, knots[:2] + period])
    v = np.concatenate([values[-1:], values, values[:2]])
    m = np.zeros_like(v)
    m[1:-1] = (v[2:] - v[:-2]) / (k[2:] - k[:-2])
    tw = knots[0] + np.mod(t - knots[0], period)
    i = np.clip(np.searchsorted(k, tw, side="right") - 1, 1, n)
    h = k[i + 1] - k[i]
    s = (tw - k[i]) / h
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * v[i]
        + (s3 - 2 * s2 + s) * h * m[i]
        + (-2 * s3 + 3 * s2) * v[i + 1]
        + (s3 - s2) * h * m[i + 1]
    )


def _silhouette(config: BlobConfig, rng: np.random.Generator, jagged: float = 0.0,
                style_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Outline polygon ``(M, 2)`` and control points ``(n, 2)``, both ``(x, y)`` in pixels; a
    ``jagged`` outline is perturbed radially (draws from ``style_rng``)."""
    n = int(rng.integers(config.control_points[0], config.control_points[1] + 1))
    outer = rng.uniform(*config.shape_radius) * config.size / 2
    theta0 = rng.uniform(0.0, 2.0 * math.pi)
    steps = np.arange(n) + rng.uniform(-config.angle_jitter, config.angle_jitter, n)
    knots = theta0 + 2.0 * math.pi * steps / n
    radii = outer * rng.uniform(1.0 - config.radius_variation, 1.0, n)

    # About one vertex per pixel of arc: smooth at any size without wasting fillPoly time.
    samples = int(np.clip(math.ceil(2.0 * math.pi * outer), 64, 8192))
    t = theta0 + np.linspace(0.0, 2.0 * math.pi, samples, endpoint=False)
    # The spline may undershoot between control points; a positive floor keeps it around the centre.
    r = _periodic_catmull_rom(knots, radii, t)
    if jagged > 0:
        r = r * blob_style.jagged_radii(t, jagged, style_rng)
    r = np.maximum(r, 0.05 * outer)
    outline = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    points = np.stack([radii * np.cos(knots), radii * np.sin(knots)], axis=1)

    lo, hi = outline.min(axis=0), outline.max(axis=0)
    room = config.size - 2 * _EDGE_MARGIN
    scale = min(1.0, room / float((hi - lo).max()))
    lo, hi = lo * scale, hi * scale
    low, high = _EDGE_MARGIN - lo, config.size - _EDGE_MARGIN - hi
    # A shape scaled to fill the room leaves a zero range, which rounding can make negative.
    offset = rng.uniform(low, np.maximum(high, low))
    return outline * scale + offset, points * scale + offset


def _fill(outline: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(size, size)`` mask of the polygon; cv2 puts integer coordinates at pixel centres.

    Spikes or gaps narrower than a pixel (many control points, strong radius variation, small
    images) can rasterise into detached pieces or enclosed background pixels; these are repaired
    (holes filled, the largest 4-connected piece kept) so the mask is always one solid region.
    """
    mask = np.zeros((size, size), np.uint8)
    fixed = np.round((outline - 0.5) * (1 << _SHIFT_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT_BITS)
    # The bounding box grown by one pixel has a background ring (the shape keeps clear of the
    # border), so one background component touches the ring and any other is a hole.
    bx, by, bw, bh = cv2.boundingRect(mask)
    box = mask[max(by - 1, 0) : by + bh + 1, max(bx - 1, 0) : bx + bw + 1]
    n, labels = cv2.connectedComponents(1 - box, connectivity=4)
    if n > 2:
        box[labels != labels[0, 0]] = 1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(box, connectivity=4)
    if n > 2:
        box[labels != 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = 0
    return mask


def _place_dots(config: BlobConfig, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n_dots, 4)`` float64 rows ``(x, y, radius, intensity)`` inside the mask."""
    n, radii = blob_style.dot_count_and_radii(config, mask, rng)
    intensity = rng.uniform(*config.dot_intensity, n)

    # Exact Euclidean distance to the outside, computed on the shape's bounding box grown by one
    # pixel (background, as the shape keeps clear of the image border) to save time. Positions
    # below are in the coordinates of that box.
    bx, by, bw, bh = cv2.boundingRect(mask)
    x0, y0 = max(bx - 1, 0), max(by - 1, 0)
    depth = cv2.distanceTransform(mask[y0 : by + bh + 1, x0 : bx + bw + 1], cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's precise distance transform differs between calls in the last bits (~5e-7):
    # rounded, the depth threshold below picks the same pixels every time (renders stay pure).
    depth = np.round(depth, 4)
    need = min(radii.max() + _DOT_MARGIN, float(depth.max()))
    region = depth >= need
    rows, cols = np.nonzero(region)
    # 0.9: a few spare grid points, since jitter pushes some of them out of the region.
    spacing = 0.9 * math.sqrt(len(rows) / n)
    start = rng.uniform(0.0, spacing, 2)
    gx = np.arange(cols.min() + start[0], cols.max() + 1, spacing)
    gy = np.arange(rows.min() + start[1], rows.max() + 1, spacing)
    x, y = (a.ravel() for a in np.meshgrid(gx, gy))
    x = x + config.dot_jitter * spacing * rng.uniform(-0.5, 0.5, x.size)
    y = y + config.dot_jitter * spacing * rng.uniform(-0.5, 0.5, y.size)
    ix, iy = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    inside = (ix >= 0) & (iy >= 0) & (ix < region.shape[1]) & (iy < region.shape[0])
    inside[inside] = region[iy[inside], ix[inside]]
    x, y = x[inside], y[inside]
    if x.size >= n:
        keep = rng.permutation(x.size)[:n]
        x, y = x[keep], y[keep]
    else:
        extra = rng.integers(len(rows), size=n - x.size)
        x = np.concatenate([x, cols[extra] + rng.uniform(0.0, 1.0, extra.size)])
        y = np.concatenate([y, rows[extra] + rng.uniform(0.0, 1.0, extra.size)])
    x, y = x + x0, y + y0
    return np.stack([x, y, radii, intensity], axis=1)


def _draw_dots(dots: np.ndarray, amplitude: np.ndarray, size: int) -> np.ndarray:
    """float32 ``(size, size)`` layer of anti-aliased discs (coverage * amplitude), max-composited."""
    layer = np.zeros((size, size), np.float32)
    x, y, r = dots[:, 0], dots[:, 1], dots[:, 2]
    half = int(math.ceil(r.max() + 0.5))
    offsets = np.arange(-half, half + 1)
    px = np.floor(x).astype(np.intp)[:, None] + offsets  # (N, W) pixel columns
    py = np.floor(y).astype(np.intp)[:, None] + offsets  # (N, W) pixel rows
    dx = px + 0.5 - x[:, None]
    dy = py + 0.5 - y[:, None]
    dist = np.sqrt(dx[:, None, :] ** 2 + dy[:, :, None] ** 2)  # (N, W, W), [dot, row, col]
    coverage = np.clip(r[:, None, None] + 0.5 - dist, 0.0, 1.0)
    ok = (
        (coverage > 0)
        & ((px >= 0) & (px < size))[:, None, :]
        & ((py >= 0) & (py < size))[:, :, None]
    )
    flat = (py[:, :, None] * size + px[:, None, :])[ok]
    np.maximum.at(layer.reshape(-1), flat, (coverage * amplitude[:, None, None])[ok].astype(np.float32))
    return layer


def _compose(config: BlobConfig, mask: np.ndarray, dots: np.ndarray, background: float, contrast: float) -> np.ndarray:
    interior = np.float32(background + config.fill_intensity)
    amplitude = dots[:, 3] - interior
    if contrast != 1.0:
        amplitude = amplitude * contrast
    clean = _draw_dots(dots, amplitude, config.size)
    # Dots blend over the interior level; the mask factor keeps the outside at 0, then lifted to
    # the background (in place: fresh full-size temporaries cost more than the arithmetic).
    clean += interior
    clean *= mask
    if background > 0:
        np.maximum(clean, np.float32(background), out=clean)
    if config.outline_intensity > 0:
        edge = mask > cv2.erode(mask, np.ones((3, 3), np.uint8))
        clean[edge] = np.maximum(clean[edge], np.float32(config.outline_intensity))
    if config.polarity == "dark":
        np.subtract(np.float32(1.0), clean, out=clean)
    return clean


def _check_seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_override(name: str, value: float | None, default: float) -> float:
    if value is None:
        return float(default)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def render_blob(
    config: BlobConfig | Mapping[str, Any] | str | Path,
    seed: int,
    index: int,
    noise_scale: float | None = None,
    mixed_prob: float | None = None,
) -> BlobSample:
    """Render sample ``index`` of the dataset ``(config, seed)``; a pure function of its arguments.

    Args:
        config: a :class:`BlobConfig`, a mapping, or a JSON/YAML file path.
        seed, index: non-negative integers; the randomness is ``SeedSequence([seed, index])``.
        noise_scale, mixed_prob: override the config's values (the curriculum sets them per
            epoch); the values used are recorded in ``meta``.

    Returns:
        :class:`BlobSample` with ``image``/``clean`` float32 ``(size, size)``, ``mask`` uint8.

    Raises:
        ConfigError: invalid config, seed, index or override.
    """
    config = BlobConfig.load(config)
    seed, index = _check_seed("seed", seed), _check_seed("index", index)
    noise_scale = _check_override("noise_scale", noise_scale, config.noise_scale)
    mixed_prob = _check_override("mixed_prob", mixed_prob, config.mixed_prob)

    # A fourth child for the wider randomisation: children are keyed by position, so the first
    # three streams are those of the reference recipe.
    shape_seq, dots_seq, noise_seq, style_seq = np.random.SeedSequence([seed, index]).spawn(4)
    styled = blob_style.style_enabled(config)
    style_rng = np.random.default_rng(style_seq)
    style = blob_style.draw_style(config, style_rng) if styled else {"background": config.background, "dot_contrast": 1.0}
    fine = style.get("pixel_scale", 1.0)
    grid = config if fine == 1.0 else config.model_copy(update={"size": round(config.size * fine)})
    outline, control_points = _silhouette(grid, np.random.default_rng(shape_seq), style.get("jaggedness", 0.0),
                                          style_rng)
    mask = _fill(outline, grid.size)
    dots = _place_dots(grid, mask, np.random.default_rng(dots_seq))
    clean = _compose(grid, mask, dots, style["background"], style["dot_contrast"])
    if styled:
        clean = blob_style.texture_and_blur(clean, style, style_rng)
    image, noise = apply_noise(
        clean, np.random.default_rng(noise_seq), config.noise_types, noise_scale=noise_scale, mixed_prob=mixed_prob
    )
    if grid.size != config.size:
        image, clean, mask, control_points, dots = blob_style.to_model_grid(
            config.size, grid.size, image, clean, mask, control_points, dots)
    meta = {
        "seed": seed,
        "index": index,
        "size": config.size,
        "n_control_points": len(control_points),
        "n_dots": len(dots),
        "mask_fraction": float(mask.mean()),
        "noise_type": noise["type"],
        "noise": noise,
        "snr_db": snr_db(clean, image),
        "noise_scale": noise_scale,
        "mixed_prob": mixed_prob,
    }
    if styled:
        meta["style"] = style
        if style["bit_depth"]:
            image = blob_style.quantise(image, style["bit_depth"], *config.percentile_clip)
    return BlobSample(image, clean, mask, control_points, dots[:, :3].astype(np.float32), meta)


def render_blob_batch(
    config: BlobConfig | Mapping[str, Any] | str | Path,
    seed: int,
    indices: Iterable[int],
    noise_scale: float | None = None,
    mixed_prob: float | None = None,
) -> dict[str, np.ndarray]:
    """Render several samples into stacked arrays (the batch format of Ray Data ``map_batches``).

    Each sample is exactly ``render_blob(config, seed, index, ...)``, whatever the batch.

    Returns:
        ``image``, ``clean``, ``mask``: float32 ``(B, 1, H, W)`` (mask values 0/1);
        ``snr_db``: float32 ``(B,)``; ``index``: int64 ``(B,)``.

    Raises:
        ConfigError: as :func:`render_blob`, or no indices.
    """
    config = BlobConfig.load(config)
    samples = [render_blob(config, seed, i, noise_scale, mixed_prob) for i in indices]
    if not samples:
        raise ConfigError("render_blob_batch: no indices given")
    return {
        "image": np.stack([s.image for s in samples])[:, None],
        "clean": np.stack([s.clean for s in samples])[:, None],
        "mask": np.stack([s.mask for s in samples]).astype(np.float32)[:, None],
        "snr_db": np.array([s.meta["snr_db"] for s in samples], np.float32),
        "index": np.array([s.meta["index"] for s in samples], np.int64),
    }
