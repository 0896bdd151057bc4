"""Scale legend: a bar and a text such as "50 µm" in a random corner (unlabelled clutter)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import CrystalConfig

log = logging.getLogger(__name__)

CORNERS = ("tl", "tr", "bl", "br")
TEXT_PAD_PX = 6


@functools.lru_cache(maxsize=None)
def _font_path(ttf: str | None) -> str | None:
    if ttf and Path(ttf).is_file():
        return ttf
    if ttf:
        log.warning("scalebar_ttf %s not found; using Pillow's bundled font", ttf)
    return None


@functools.lru_cache(maxsize=64)
def _font(ttf: str | None, size: int) -> ImageFont.FreeTypeFont:
    """The configured TrueType font, or Pillow's bundled one (same on every machine)."""
    path = _font_path(ttf)
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=256)
def _has_glyph(font: ImageFont.FreeTypeFont, char: str) -> bool:
    # A missing glyph renders as the font's "notdef" box, as U+FFFF (a non-character) does.
    missing = font.getmask("\uffff")
    mask = font.getmask(char)
    return mask.size != missing.size or bytes(mask) != bytes(missing)


def draw_scalebar(img: np.ndarray, config: CrystalConfig, rng: np.random.Generator) -> dict | None:
    """Draw the legend on ``img`` (uint8 (H, W), in place) with probability ``scalebar_prob``.

    Returns what was drawn (JSON-serialisable) or None. Only the legend's region is converted
    to a PIL image, so the cost does not grow with the canvas.
    """
    if not config.scalebar_enable or rng.random() >= config.scalebar_prob:
        return None
    h, w = img.shape
    value = int(rng.integers(config.scalebar_value_range[0], config.scalebar_value_range[1], endpoint=True))
    unit = config.scalebar_units[int(rng.integers(len(config.scalebar_units)))]
    font_px = int(rng.uniform(*config.scalebar_font_px))
    bar_len = int(rng.uniform(*config.scalebar_len_px))
    thick = int(rng.uniform(*config.scalebar_thick_px))
    corner = CORNERS[int(rng.integers(len(CORNERS)))]
    gray = int(rng.integers(config.scalebar_white_jit[0], config.scalebar_white_jit[1], endpoint=True))

    font = _font(config.scalebar_ttf, font_px)
    if not all(_has_glyph(font, ch) for ch in unit if not ch.isascii()):
        unit = "".join(ch if ch.isascii() else "u" for ch in unit)  # "µm" -> "um"
    text = f"{value} {unit}"
    stroke = max(1, round(font_px * 0.08)) if config.scalebar_outline else 0
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    tw, th = right - left, bottom - top

    m = config.scalebar_margin_px
    bar_y = h - m if corner[0] == "b" else m
    bar_x0 = m if corner[1] == "l" else w - m - bar_len
    tx = bar_x0 + bar_len - tw if corner[1] == "r" else bar_x0
    ty = bar_y - thick // 2 - TEXT_PAD_PX - th if corner[0] == "b" else bar_y + thick // 2 + TEXT_PAD_PX
    tx, ty = min(max(tx, 0), max(w - tw, 0)), min(max(ty, 0), max(h - th, 0))
    bar = (bar_x0, bar_y - thick // 2, bar_x0 + bar_len - 1, bar_y - thick // 2 + thick - 1)

    # Crop the region holding bar, outline and text; draw there with shifted coordinates.
    x0 = max(0, min(bar[0], tx) - 2)
    y0 = max(0, min(bar[1], ty) - 2)
    x1 = min(w, max(bar[2], tx + tw) + 3)
    y1 = min(h, max(bar[3], ty + th) + 3)
    if x1 <= x0 or y1 <= y0:
        return None
    region = Image.fromarray(img[y0:y1, x0:x1])
    draw = ImageDraw.Draw(region)
    if config.scalebar_outline:
        draw.rectangle((bar[0] - x0 - 1, bar[1] - y0 - 1, bar[2] - x0 + 1, bar[3] - y0 + 1), fill=0)
    draw.rectangle((bar[0] - x0, bar[1] - y0, bar[2] - x0, bar[3] - y0), fill=gray)
    draw.text((tx - x0 - left, ty - y0 - top), text, font=font, fill=gray, stroke_width=stroke, stroke_fill=0)
    img[y0:y1, x0:x1] = np.asarray(region)
    return {"text": text, "corner": corner, "bar_len_px": bar_len, "thick_px": thick, "font_px": font_px,
            "gray": gray, "bbox": [int(x0), int(y0), int(x1), int(y1)]}
