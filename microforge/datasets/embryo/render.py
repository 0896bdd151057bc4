"""The embryo renderer: one frame of a synthetic time-lapse video at the seven focal planes.

``render_embryo(config, seed, video, frame, frames=F)`` draws the :class:`~.scene.FrameScene`
of the frame once, in focus, and derives every focal plane from that one image (defocus blur
growing with the distance from F0, a relief that flips sign across the focus, and camera noise of
its own per plane), so the seven planes show the same scene. Every random draw comes from
``SeedSequence([seed, video, ...])``: pure in (config, seed, video, frame, frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .config import EmbryoConfig
from .layout import FOCAL_PLANES
from .scene import Ellipse, FrameScene, describe_frame

__all__ = ["RENDERER_VERSION", "EmbryoFrame", "encode_frame", "render_embryo"]

RENDERER_VERSION = "1"
_TEXTURE, _NOISE = 0x7E7, 0x0153


@dataclass(frozen=True)
class EmbryoFrame:
    """A rendered frame: the scene, the uint8 image of each focal plane asked for, and what the
    in-focus drawing holds: ``cells`` labels each visible blastomere (1..n, 0 elsewhere) and
    ``cavity`` marks the blastocoel."""

    scene: FrameScene
    planes: dict[str, np.ndarray]
    cells: np.ndarray
    cavity: np.ndarray

    @property
    def visible_cells(self) -> int:
        """Blastomeres with at least one pixel of their own in focus."""
        return int(np.count_nonzero(np.bincount(self.cells.ravel(), minlength=1)[1:]))


@lru_cache(maxsize=8)
def _textures(size: int, seed: int, video: int) -> tuple[np.ndarray, np.ndarray]:
    """A video's granular texture (unit std, ~2 px grain at 500 px) and a slow illumination
    field; fixed for the video so that frames differ only by development."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, video, _TEXTURE]))
    grain = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), max(0.6, size / 400))
    grain /= grain.std() + 1e-6
    light = cv2.resize(rng.standard_normal((4, 4), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    for array in (grain, light):
        array.setflags(write=False)
    return grain, light


def _distance(shape: tuple[int, int], e: Ellipse, pad: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Signed distance in px (approximately: the normalised radius scaled by the mean semi-axis)
    to the ellipse's outline over its bounding box, and the normalised radius itself."""
    h, w = shape
    reach = max(e.a, e.b) + pad
    y0, y1 = max(int(e.y - reach), 0), min(int(math.ceil(e.y + reach)) + 1, h)
    x0, x1 = max(int(e.x - reach), 0), min(int(math.ceil(e.x + reach)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - e.x, yy - e.y
    c, s = math.cos(e.angle), math.sin(e.angle)
    radius = np.sqrt(((dx * c + dy * s) / e.a) ** 2 + ((dy * c - dx * s) / e.b) ** 2)
    return (slice(y0, y1), slice(x0, x1)), (radius - 1.0) * (0.5 * (e.a + e.b)), radius


class _Canvas:
    """Float image in [0, 1] with soft-edged fills and dark rims, plus the label masks."""

    def __init__(self, config: EmbryoConfig, seed: int, video: int) -> None:
        size = config.size
        self.config, self.scale = config, size / 500.0
        self.grain, light = _textures(size, seed, video)
        self.image = config.background + 0.03 * light + 0.01 * self.grain
        self.cells = np.zeros((size, size), np.uint8)
        self.cavity = np.zeros((size, size), bool)

    def paint(self, e: Ellipse, level: float, *, grain: float, rim: float, rim_px: float = 2.0,
              label: int = 0) -> None:
        width = max(0.8, rim_px * self.scale)
        sl, dist, radius = _distance(self.image.shape, e, 3 * width + 2)
        if dist.size == 0:
            return
        alpha = np.clip(0.5 - dist / max(0.7, self.scale), 0.0, 1.0)
        # Darker towards the edge, as light through a sphere: cells read as bodies, not discs.
        fill = level + grain * self.grain[sl] - self.config.shading * np.minimum(radius, 1.0) ** 2
        region = self.image[sl]
        region += alpha * (fill - region)
        region -= rim * np.exp(-(dist / width) ** 2)
        if label:
            self.cells[sl][radius < 1] = label

    def ring(self, outer: Ellipse, thickness: float, gap: tuple[float, float] | None) -> None:
        """The zona pellucida: a brighter annulus with dark edges, open over ``gap`` when hatching."""
        cfg = self.config
        width = max(0.8, 1.5 * self.scale)
        sl, dist, _ = _distance(self.image.shape, outer, 3 * width + 2)
        inner = dist + thickness
        alpha = np.clip(0.5 - dist, 0, 1) * np.clip(0.5 + inner, 0, 1)
        edges = np.exp(-(dist / width) ** 2) + np.exp(-(inner / width) ** 2)
        if gap is not None:
            ys, xs = np.mgrid[sl[0], sl[1]]
            angle = np.arctan2(ys - outer.y, xs - outer.x)
            off = np.abs((angle - gap[0] + math.pi) % (2 * math.pi) - math.pi)
            keep = np.clip((off - gap[1]) / 0.08, 0, 1).astype(np.float32)
            alpha, edges = alpha * keep, edges * keep
        region = self.image[sl]
        region += alpha * (cfg.background + 0.1 + 0.03 * self.grain[sl] - region)
        region -= cfg.rim_contrast * 0.8 * edges


def _draw(config: EmbryoConfig, seed: int, video: int, scene: FrameScene) -> _Canvas:
    cfg, canvas = config, _Canvas(config, seed, video)
    canvas.ring(scene.zona, scene.zona_thickness, scene.zona_gap)
    for body in scene.polar_bodies:
        canvas.paint(body, cfg.cytoplasm + 0.06, grain=0.5 * cfg.granularity, rim=cfg.rim_contrast, rim_px=1.2)
    if scene.mass is not None:
        canvas.paint(scene.mass, cfg.cytoplasm, grain=cfg.granularity, rim=cfg.rim_contrast)
    rim = cfg.rim_contrast * (1.0 - 0.85 * scene.compaction)  # compaction blurs the cell boundaries
    for label, cell in enumerate(scene.cells, start=1):
        shade = 0.03 * math.sin(2.7 * label)  # blastomeres differ a little in density
        canvas.paint(cell, cfg.cytoplasm + shade, grain=cfg.granularity, rim=rim, label=label)
    for nucleus, visibility in scene.pronuclei:
        canvas.paint(nucleus, cfg.cytoplasm + 0.14 * visibility, grain=0.3 * cfg.granularity,
                     rim=cfg.rim_contrast * 0.8 * visibility, rim_px=1.5)
    if scene.cavity is not None:
        canvas.cavity |= _mask(canvas, scene.cavity)
        canvas.paint(scene.cavity, cfg.cavity_level, grain=0.15 * cfg.granularity, rim=0.6 * cfg.rim_contrast,
                     rim_px=1.5)
    if scene.icm is not None:
        canvas.paint(scene.icm, cfg.cytoplasm - 0.06, grain=1.3 * cfg.granularity, rim=0.5 * cfg.rim_contrast)
        canvas.cavity &= ~_mask(canvas, scene.icm)
    if scene.hatched is not None:
        canvas.paint(scene.hatched, cfg.cytoplasm + 0.02, grain=cfg.granularity, rim=cfg.rim_contrast)
    return canvas


def _mask(canvas: _Canvas, e: Ellipse) -> np.ndarray:
    mask = np.zeros(canvas.image.shape, bool)
    sl, _, radius = _distance(canvas.image.shape, e, 0)
    mask[sl] = radius < 1
    return mask


def _plane(config: EmbryoConfig, sharp: np.ndarray, focal: str, seed: int, video: int, frame: int) -> np.ndarray:
    """One focal plane of the in-focus image: defocus, a relief whose sign flips across the
    focus, camera noise of its own; uint8."""
    microns = int(focal[1:])
    scale = config.size / 500.0
    image = sharp
    if microns:
        image = cv2.GaussianBlur(sharp, (0, 0), config.defocus_px * scale * abs(microns) / 15)
        relief = image - cv2.GaussianBlur(image, (0, 0), 2.5 * scale)
        image = image + config.halo * math.copysign(min(1.0, abs(microns) / 15), microns) * relief
    rng = np.random.default_rng(np.random.SeedSequence([seed, video, frame, FOCAL_PLANES.index(focal), _NOISE]))
    image = image + config.noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_embryo(config: EmbryoConfig, seed: int, video: int, frame: int, *, frames: int,
                  focal: tuple[str, ...] | None = None) -> EmbryoFrame:
    """Frame ``frame`` (1-based) of video ``video`` (0-based) of ``frames`` frames, at the focal
    planes ``focal`` (default: all seven).

    Raises:
        ValueError: a frame outside 1..frames or an unknown focal plane.
    """
    planes = FOCAL_PLANES if focal is None else tuple(focal)
    unknown = [f for f in planes if f not in FOCAL_PLANES]
    if unknown:
        raise ValueError(f"unknown focal plane '{unknown[0]}'; valid: {', '.join(FOCAL_PLANES)}")
    scene = describe_frame(config, seed, video, frame, frames=frames)
    canvas = _draw(config, seed, video, scene)
    sharp = canvas.image.astype(np.float32)
    images = {f: _plane(config, sharp, f, seed, video, frame) for f in planes}
    return EmbryoFrame(scene, images, canvas.cells, canvas.cavity)


def encode_frame(config: EmbryoConfig, image: np.ndarray) -> bytes:
    """JPEG bytes of a frame at the config's quality (deterministic for a given OpenCV)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {image.dtype} {image.shape} frame as JPEG")
    return buf.tobytes()
