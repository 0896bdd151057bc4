"""Configuration of the DIC rod-crystal renderer and its presets.

Field names are those of the original crystal tool, so its preset JSON files load unchanged.
A "range" field ``(lo, hi)`` is sampled uniformly per image, per rod or per item (the field's
description says which). A "schedule" field is ``(lo, hi)`` or ``(lo, hi@t0, hi@t1)``: values
are drawn from ``[lo, hi(t)]`` where ``hi(t)`` moves linearly from ``hi@t0`` to ``hi@t1`` with the
image's growth stage ``t`` in [0, 1] (see :mod:`microforge.datasets.crystals.schedule`).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator

from microforge.platform.config import ConfigModel, FloatRange, IntRange, suggest
from microforge.platform.errors import ConfigError

log = logging.getLogger(__name__)

MAX_CANVAS_PX = 16384


def _within(lo: float, hi: float, *, open_lo: bool = False):
    """Validator: every element of a tuple lies in [lo, hi] (or (lo, hi] with ``open_lo``)."""

    def check(value: tuple) -> tuple:
        for x in value:
            if x > hi or x < lo or (open_lo and x == lo):
                interval = f"{'(' if open_lo else '['}{lo}, {hi}]"
                raise ValueError(f"values must lie in {interval}, got {list(value)}")
        return value

    return AfterValidator(check)


def _schedule(value: tuple[float, ...]) -> tuple[float, ...]:
    if len(value) not in (2, 3):
        raise ValueError(f"expected (lo, hi) or (lo, hi@t0, hi@t1), got {len(value)} numbers: {list(value)}")
    if any(value[0] > hi for hi in value[1:]):
        raise ValueError(f"lo must not exceed any hi: {list(value)}")
    return value


# (lo, hi) or (lo, hi@t0, hi@t1); see the module docstring.
Schedule = Annotated[tuple[float, ...], AfterValidator(_schedule)]

Gray = Annotated[FloatRange, _within(0, 255)]
Angle = Annotated[FloatRange, _within(-360, 360)]
NonNegRange = Annotated[FloatRange, _within(0, 1e4)]
PositiveRange = Annotated[FloatRange, _within(0, 1e4, open_lo=True)]
PositiveIntRange = Annotated[IntRange, _within(1, MAX_CANVAS_PX)]
Delta = Annotated[FloatRange, _within(-255, 255)]


def _f(default, description: str, **bounds):
    """``Field`` with its description: every field is documented."""
    return Field(default, description=description, **bounds)


class CrystalConfig(ConfigModel):
    """Every knob of :func:`~microforge.datasets.crystals.render_crystal`; defaults = ``default`` preset."""

    # Canvas
    width: int = _f(1024, "Image width in pixels.", gt=0, le=MAX_CANVAS_PX)
    height: int = _f(768, "Image height in pixels.", gt=0, le=MAX_CANVAS_PX)
    channels: Literal[1, 3] = _f(1, "1 = gray (H, W) image; 3 = the gray copied into (H, W, 3).")

    # Background
    bg_gray_range: Gray = _f((90, 97), "Background gray level range, sampled independently per pixel "
                                       "(a grain that blur_sigma smooths), as the original tool did.")
    vignette_strength: float = _f(0.0, "Multiplicative darkening 1 - s*r^2 towards the corners (r = 1 there).",
                                  ge=0, le=1)
    tilt_enable: bool = _f(True, "Add a linear illumination ramp across the image.")
    tilt_dir_deg: Angle = _f((-30.0, 30.0), "Ramp direction range in degrees (0 = +x, 90 = +y), per image.")
    tilt_ptp: NonNegRange = _f((12.0, 15.0), "Ramp peak-to-peak gray levels, per image.")
    tilt_center: Annotated[tuple[float, float], _within(-0.5, 0.5)] = _f(
        (0.0, 0.0), "(x, y) shift of the ramp's zero, in image fractions (not a range).")
    bg_noise_std: float = _f(0.0, "Std of Gaussian pixel noise added to the background.", ge=0, le=255)
    illum_ampl: float = _f(0.0, "Amplitude (gray levels) of low-frequency illumination; 0 = off.", ge=0, le=255)
    illum_sigma: float = _f(0.0, "Smoothing sigma (px) of the illumination field.", ge=0, le=4096)
    relief_field_enable: bool = _f(True, "Add the DIC relief of a smooth random height field.")
    relief_field_sigma_px: PositiveRange = _f((20.0, 20.0), "Height-field smoothing sigma (px), per image.")
    relief_field_gain: Delta = _f((-0.5, 0.0), "Relief gain (gray levels per unit std), per image.")
    relief_field_dir_deg: Angle = _f((0.0, 0.0), "DIC shear direction of the relief (degrees), per image.")
    relief_field_extra_blur: float = _f(0.0, "Extra blur sigma (px) of the relief; 0 = none.", ge=0, le=1024)

    # Rod shading
    rods_enable: bool = _f(True, "Draw the labelled rods (off: background, ghosts and debris only).")
    taper_strength: float = _f(0.45, "Width loss towards the tips: w(u) = W*max(min_width_ratio, 1 - s*|u|^p).",
                               ge=0, le=10)
    taper_power: float = _f(1.0, "Exponent p of the taper.", gt=0, le=10)
    min_width_ratio: float = _f(0.35, "Smallest width fraction the taper keeps.", gt=0, le=1)
    blur_sigma: float = _f(0.0, "Final Gaussian blur sigma (px) of the whole image; 0 = none.", ge=0, le=64)
    cross_soft_sigma: float = _f(0.30, "Body profile sigma across the rod, as a fraction of w(u).", gt=0, le=5)
    rod_halo_sigma: float = _f(3.2, "Width (px) of the faint halo around each rod; 0 = none.", ge=0, le=64)
    rod_halo_gain: float = _f(0.4, "Halo intensity as a fraction of the rod's body delta.", ge=-10, le=10)
    rod_noise_std: float = _f(0.0, "Std of Gaussian noise inside rod bodies; 0 = none.", ge=0, le=255)
    shadow_gain: Annotated[FloatRange, _within(-255, 255)] = _f(
        (6.0, 12.0), "Gray-level gain of the DIC edge pair, per rod.")
    shadow_width_mult: NonNegRange = _f((0.02, 0.05), "Edge-pair sigma as a fraction of the body sigma "
                                                      "(at least 0.6 px), per rod.")
    shadow_bias: Annotated[FloatRange, _within(-10, 10)] = _f(
        (0.05, 0.12), "Bright lobe x(1-b), dark lobe x(1+b); b > 1 turns both lobes dark. Per rod.")
    shadow_offset_px: Annotated[FloatRange, _within(-1e3, 1e3)] = _f(
        (0.05, 0.25), "Offset (px) of the edge pair from the rod axis, random side, per rod.")

    # Stage schedule (t in [0, 1] from lambda)
    n_rods_rng_lo_hi: Annotated[Schedule, _within(0, 1e5)] = _f(
        (150, 600), "Schedule of the number of rods per image.")
    rod_len_px_lo_hi: Annotated[Schedule, _within(0, MAX_CANVAS_PX, open_lo=True)] = _f(
        (30.0, 380.0), "Schedule of rod length (px), per rod.")
    rod_aspect_lo_hi: Annotated[Schedule, _within(0, 1, open_lo=True)] = _f(
        (0.02, 0.30), "Schedule of width/length, per rod (width is at least 2 px).")
    rod_delta_rng: Annotated[Schedule, _within(-255, 255)] = _f(
        (-12.0, 0.0), "Schedule of the rod body's gray-level delta, per rod.")
    fused_enable: bool = _f(True, "Let some rods grow as fused bundles of 2-5 labelled arms.")
    fused_p0: float = _f(0.0001, "Probability that a rod is fused at t = 0.", ge=0, le=1)
    fused_p1: float = _f(0.003, "Probability that a rod is fused at t = 1.", ge=0, le=1)
    stage_lambda_range: Annotated[FloatRange, _within(0, 1e6, open_lo=True)] = _f(
        (0.1, 10.0), "Range of the growth stage lambda, sampled log-uniformly per image; "
                     "t = (log10(lambda) + 1) / 2 clamped to [0, 1].")

    # Ghost rods: weaker, distorted, unlabelled
    ghost_enable: bool = _f(False, "Draw unlabelled ghost rods under the labelled ones.")
    ghost_fraction: float = _f(0.2, "Number of ghosts as a multiple of the number of rods (may exceed 1).",
                               ge=0, le=100)
    ghost_gain_mult: float = _f(0.5, "Factor on shadow_gain for ghosts.", ge=0, le=10)
    ghost_delta_rng: Delta = _f((-3.0, 0.0), "Ghost body gray-level delta, per ghost.")
    ghost_blur_sigma: float = _f(0.0, "Blur sigma (px) of background + ghosts, before the rods.", ge=0, le=64)
    ghost_noise_std: float = _f(0.0, "Std of Gaussian noise added after the ghost layer.", ge=0, le=255)
    ghost_curvature: float = _f(0.0, "Extra bow of ghosts: sagitta curvature * width / 4 px, random side.", ge=0, le=100)
    ghost_width_jit_amp: float = _f(0.25, "Relative jitter of ghost width along the rod.", ge=0, le=10)
    ghost_edge_jit_amp: float = _f(0.25, "Relative jitter of ghost edge strength along the rod.", ge=0, le=10)
    ghost_offset_jit_amp: float = _f(0.39, "Relative jitter of the ghost edge offset along the rod.", ge=0, le=10)
    ghost_curve_kappa_range: Annotated[FloatRange, _within(-10, 10)] = _f(
        (-0.125, 0.125), "Parabolic bend of ghosts as a fraction of their length, per ghost.")
    ghost_ragged_p: float = _f(0.90, "Fraction of a ghost's edge that drops out (ragged edges).", ge=0, le=1)
    ghost_ragged_corr: float = _f(0.90, "Correlation length of the ragged mask, as a fraction of the length.",
                                  gt=0, le=4)
    ghost_mult_mix: float = _f(0.90, "Mix of multiplicative (1) vs additive (0) ghost composition.", ge=0, le=1)

    # Debris: unlabelled specks and dashes
    debris_rate: float = _f(0.0, "Expected debris items per pixel of canvas (0.001 on 1024x768 = ~786).",
                            ge=0, le=0.05)
    debris_int_delta: Delta = _f((-6.0, 6.0), "Gray-level delta of a debris item, per item.")
    debris_dash_prob: float = _f(0.15, "Probability that a debris item is a dash, not a disc.", ge=0, le=1)
    debris_size_px: PositiveIntRange = _f((1, 3), "Disc radius (px), per item; a dash of size s is a 1 px "
                                                               "line 4s+3 px long.")

    # Scale legend: unlabelled bar + text in a corner
    scalebar_enable: bool = _f(True, "Draw a scale bar with text in a random corner.")
    scalebar_prob: float = _f(0.5, "Probability that an image gets a scale bar.", ge=0, le=1)
    scalebar_len_px: PositiveIntRange = _f((80, 240), "Bar length (px).")
    scalebar_thick_px: PositiveIntRange = _f((2, 12), "Bar thickness (px).")
    scalebar_margin_px: int = _f(24, "Distance of the bar from the image border (px).", ge=0, le=MAX_CANVAS_PX)
    scalebar_outline: bool = _f(True, "Outline bar and text in black.")
    scalebar_font_px: PositiveIntRange = _f((70, 80), "Text size (px).")
    scalebar_white_jit: Annotated[IntRange, _within(0, 255)] = _f((245, 255), "Gray level of bar and text.")
    scalebar_units: tuple[str, ...] = _f(("μm", "um", "nm", "mm"), "Units to choose from (one per image).",
                                         min_length=1)
    scalebar_value_range: Annotated[IntRange, _within(0, 10**6)] = _f((10, 99), "Number shown before the unit.")
    scalebar_ttf: Optional[str] = _f(None, "TrueType font file; missing or null: Pillow's bundled font "
                                           "(which has no 'µ': written 'u').")

    parallel_workers: Optional[int] = _f(None, "Ignored (kept so old presets load): parallelism comes from Ray.")

    @field_validator("parallel_workers")
    @classmethod
    def _ignore_parallel_workers(cls, value: Optional[int]) -> Optional[int]:
        if value is not None:
            log.info("parallel_workers=%s is ignored: rendering runs in parallel across Ray workers", value)
        return value


def _presets_dir():
    return resources.files("microforge.datasets.crystals") / "presets"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``default``, ``standard``)."""
    return sorted(p.name.removesuffix(".json") for p in _presets_dir().iterdir()
                  if p.name.endswith(".json"))


def load_preset(name: str | Path) -> CrystalConfig:
    """A shipped preset by name, or a JSON/YAML preset file by path.

    Raises:
        ConfigError: unknown preset name (the message lists the valid ones), missing or invalid file.
    """
    path = Path(name)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or len(path.parts) > 1:
        return CrystalConfig.load(path)
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown crystal preset '{name}'{suggest(name, names)}; "
                          f"valid presets: {', '.join(names)}, or a path to a .json/.yaml file")
    with resources.as_file(_presets_dir() / f"{name}.json") as preset_file:
        return CrystalConfig.load(preset_file)
