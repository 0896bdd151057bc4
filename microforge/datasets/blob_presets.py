"""Named blob recipes, the out-of-recipe recipe derived from a training one, and object scales.

* :data:`BLOB_PRESETS`: ``default`` (the reference recipe: every ``BlobConfig`` default) and
  ``robust`` (sizes relative to the silhouette and the image, so it means the same at any
  ``size``): silhouettes from a quarter to nine tenths of the half-image, smooth to jagged
  outlines, dots of 2-20 % of the silhouette radius covering 3-50 % of it, dim to bright dots
  of varying contrast over a background level of 0-0.25 with a smooth texture, blur before the
  noise, half of the images on pixels up to 4x finer than the model's (area-averaged down, as an
  upload resized to the model's scale is), and percentile normalisation to 8 or 16 bits.
* :func:`ood_blob_config`: a recipe whose ranges lie just outside the training recipe's wherever
  the config leaves room (larger silhouettes and dots, more dots, dimmer contrast, a brighter and
  more textured background, more blur, rougher outlines, 8-bit normalisation), for
  ``val_ood_dice`` and the benchmark's out-of-recipe table.
* :func:`blob_object_scale`: the median silhouette and dot radii (px) of a recipe, recorded in
  a delineation artifact so inputs can be brought to the scale the model was trained at.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

from .blobs import BlobConfig, render_blob

__all__ = ["BLOB_PRESETS", "OOD_SEED", "blob_config", "blob_object_scale", "ood_blob_config"]

BLOB_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "robust": {
        "control_points": (4, 20),
        "shape_radius": (0.25, 0.9),
        "radius_variation": 0.55,
        "dot_radius_relative": (0.02, 0.2),
        "dot_coverage": (0.03, 0.5),
        "dot_intensity": (0.3, 1.0),
        "dot_contrast": (0.4, 1.0),
        "background_range": (0.0, 0.25),
        "texture": (0.0, 0.1),
        "texture_length": (0.03, 0.3),
        "jaggedness": (0.0, 0.15),
        "blur": (0.0, 1.5),
        "bit_depths": (8, 16),
        "pixel_scale": (1.0, 4.0),
        "pixel_scale_prob": 0.5,  # half at the model's own pixels: uploads at its scale, the heaviest noise
    },
}
OOD_SEED = 4242  # the out-of-recipe set's seed, apart from training (0..) and eval (12345) seeds


def blob_config(options: Mapping[str, Any] | None = None, *, preset: str | None = None, **fields: Any) -> BlobConfig:
    """A :class:`BlobConfig` from a preset (``options["preset"]`` or ``preset``, default
    ``default``) with ``options`` and ``fields`` on top.

    Raises:
        ConfigError: unknown preset (with the closest name) or an invalid field.
    """
    options = dict(options or {})
    name = options.pop("preset", None) or preset or "default"
    if name not in BLOB_PRESETS:
        raise ConfigError(f"unknown blob preset '{name}'{suggest(str(name), tuple(BLOB_PRESETS))}; "
                          f"valid: {', '.join(BLOB_PRESETS)}")
    return BlobConfig.load({**BLOB_PRESETS[name], **options, **fields})


def _above(lo: float, hi: float, ceiling: float) -> tuple[float, float]:
    """A narrow range just above ``[lo, hi]`` (just below it when ``hi`` is at the ``ceiling``)."""
    if hi * 1.05 < ceiling:
        return hi * 1.05, min(hi * 1.3, ceiling)
    return 0.7 * lo, 0.95 * lo


def ood_blob_config(config: BlobConfig | Mapping[str, Any]) -> BlobConfig:
    """The out-of-recipe counterpart of a training recipe (see the module docstring): each
    widened range moved just past the training one (neighbours, not extremes); same size and
    noise types, full noise range."""
    c = BlobConfig.load(config)
    update: dict[str, Any] = {"noise_scale": 1.0, "shape_radius": _above(*c.shape_radius, 1.0), "bit_depths": (8,),
                              "pixel_scale": (1.0, 1.0)}  # its pixels: those of the size it is rendered at
    if c.dot_radius_relative is not None:
        update["dot_radius_relative"] = _above(*c.dot_radius_relative, 0.6)
    else:
        update["dot_radius"] = _above(*c.dot_radius, c.size / 2 - 1)
    if c.dot_coverage is not None:
        update["dot_coverage"] = _above(*c.dot_coverage, 0.8)
    else:
        update["dots"] = (c.dots[1] + 1, min(2 * c.dots[1] + 1, 10_000))
    update["dot_contrast"] = (0.7 * c.dot_contrast[0], 0.95 * c.dot_contrast[0])
    background = c.background_range[1] if c.background_range else c.background
    update["background_range"] = (background + 0.02, min(background + 0.1, 1.0 - c.fill_intensity - 0.2))
    update["dot_intensity"] = (max(c.dot_intensity[0], update["background_range"][1] + c.fill_intensity + 0.15), 1.0)
    update["texture"] = (c.texture[1] + 0.01, c.texture[1] + 0.05)
    update["jaggedness"] = (min(c.jaggedness[1] + 0.02, 0.38), min(c.jaggedness[1] + 0.08, 0.4))
    update["blur"] = (c.blur[1] + 0.25, c.blur[1] + 1.0)
    return BlobConfig.load({**c.to_json_dict(), **update})


def blob_object_scale(config: BlobConfig | Mapping[str, Any], samples: int = 16, seed: int = 0) -> dict[str, float]:
    """Median equivalent silhouette radius ``sqrt(area / pi)`` and median dot radius, in pixels,
    over ``samples`` renders (exact for any recipe, whatever its relative settings)."""
    c = BlobConfig.load({**BlobConfig.load(config).to_json_dict(), "noise_types": ("gaussian",)})
    silhouettes, dots = [], []
    for index in range(samples):
        sample = render_blob(c, seed, index, noise_scale=0.0)
        silhouettes.append(math.sqrt(float(sample.mask.sum()) / math.pi))
        dots.extend(sample.dots[:, 2].tolist())
    return {"silhouette_radius_px": round(float(np.median(silhouettes)), 3),
            "dot_radius_px": round(float(np.median(dots)), 3)}
