"""Between oriented boxes and the detector's maps: targets, decoding, crops and augmentation.

:func:`encode_targets` turns the boxes of one image into dense arrays (so a batch of images with
any number of rods is a batch of equal-shaped tensors through Ray Data): an oriented Gaussian
heatmap peaking at 1 in each centre cell (sigmas a sixth of the rod's length and width, at least
:data:`MIN_SIGMA` cells: a slender rod's peak is as narrow as the rod), the regression maps at the
centre cells and their mask, and the boxes themselves padded to ``max_boxes`` with their count
(for AP during validation). :func:`decode_maps` inverts it: peaks (3x3 maximum), sub-cell offset,
``exp`` of the log sizes, ``atan2(sin 2θ, cos 2θ) / 2``, then rotated NMS.

Augmentation (:func:`augment`) moves image and boxes together: horizontal and vertical flips and
90-degree rotations (exact on the pixel grid), then brightness, contrast and Gaussian blur of the
image alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from microforge.datasets.obb import OrientedBox, clip_boxes, normalise_angle
from microforge.datasets.rotated import boxes_array, rotated_nms

__all__ = ["Augmentation", "DecodeSettings", "MIN_SIGMA", "augment", "clip_box_array", "crop", "decode_maps",
           "encode_targets"]

MIN_SIGMA = 0.6  # cells
LOG_EPS = 1e-3  # px: keeps log sizes finite for a degenerate label


def clip_box_array(boxes: np.ndarray, width: int, height: int, min_visible_fraction: float = 0.25) -> np.ndarray:
    """Boxes ``(N, 5)`` clipped to the image as the dataset labels are (:func:`~.obb.clip_boxes`)."""
    kept = clip_boxes([OrientedBox.from_geometry(*map(float, b)) for b in boxes], width, height, min_visible_fraction)
    return boxes_array(kept)


def crop(image: np.ndarray, boxes: np.ndarray, x0: int, y0: int, size: int,
         min_visible_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` window at ``(x0, y0)`` (edge-padded where it passes the border) and
    its boxes, shifted and clipped to the window."""
    h, w = image.shape[:2]
    pad_y, pad_x = max(0, y0 + size - h), max(0, x0 + size - w)
    if pad_x or pad_y:
        image = np.pad(image, ((0, pad_y), (0, pad_x)), mode="edge")
    window = np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size])
    shifted = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    shifted[:, 0] -= x0
    shifted[:, 1] -= y0
    return window, clip_box_array(shifted, size, size, min_visible_fraction)


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random augmentation of a training image (see :func:`augment`)."""

    flips: bool = True
    rotate90: bool = True
    brightness: float = 0.1   # additive, in fractions of the image's range
    contrast: float = 0.2     # multiplicative about the mean, 1 +- this
    blur_sigma: float = 1.0   # Gaussian blur sigma drawn from [0, this] px, half of the time


def augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
            settings: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray]:
    """Flip / rotate image ``(H, W)`` float32 and boxes ``(N, 5)`` together, then change the
    image's brightness, contrast and sharpness. Box centres use the pixel-corner convention of
    :mod:`~microforge.datasets.obb`: a flip maps x to ``W - x``."""
    image = np.asarray(image, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    if settings.flips and rng.random() < 0.5:  # horizontal
        image = image[:, ::-1]
        boxes[:, 0] = image.shape[1] - boxes[:, 0]
        boxes[:, 4] = -boxes[:, 4]
    if settings.flips and rng.random() < 0.5:  # vertical
        image = image[::-1]
        boxes[:, 1] = image.shape[0] - boxes[:, 1]
        boxes[:, 4] = -boxes[:, 4]
    if settings.rotate90:
        for _ in range(int(rng.integers(0, 4))):  # each turn: 90 degrees counter-clockwise on screen
            h, w = image.shape
            image = np.rot90(image)
            boxes[:, 0], boxes[:, 1] = boxes[:, 1].copy(), w - boxes[:, 0]
            boxes[:, 4] = boxes[:, 4] - math.pi / 2
    boxes[:, 4] = [normalise_angle(a) for a in boxes[:, 4]]
    image = np.ascontiguousarray(image)
    lo, hi = float(image.min(initial=0.0)), float(image.max(initial=1.0))
    span = max(hi - lo, 1e-6)
    mean = float(image.mean()) if image.size else 0.0
    gain = 1.0 + rng.uniform(-settings.contrast, settings.contrast)
    shift = rng.uniform(-settings.brightness, settings.brightness) * span
    image = (image - mean) * gain + mean + shift
    if settings.blur_sigma > 0 and rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(min(0.3, settings.blur_sigma), settings.blur_sigma))
    return image.astype(np.float32), boxes


def encode_targets(boxes: np.ndarray, height: int, width: int, stride: int = 4,
                   max_boxes: int = 512) -> dict[str, np.ndarray]:
    """Dense training targets of one image ``height`` x ``width`` with boxes ``(N, 5)``.

    Returns:
        ``heatmap (1, h, w)``, ``size (2, h, w)`` (log length, log width), ``angle (2, h, w)``
        (cos 2θ, sin 2θ), ``offset (2, h, w)`` (cells), ``reg_mask (1, h, w)`` (1 at centre
        cells), ``boxes (max_boxes, 5)`` (zero-padded, the first ``max_boxes`` only) and
        ``n_boxes`` (the count, int64 scalar), where ``h, w = height // stride, width // stride``.
    """
    h, w = height // stride, width // stride
    out = {
        "heatmap": np.zeros((1, h, w), np.float32),
        "size": np.zeros((2, h, w), np.float32),
        "angle": np.zeros((2, h, w), np.float32),
        "offset": np.zeros((2, h, w), np.float32),
        "reg_mask": np.zeros((1, h, w), np.float32),
        "boxes": np.zeros((max_boxes, 5), np.float32),
        "n_boxes": np.int64(0),
    }
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    kept = boxes[:max_boxes]
    out["boxes"][:len(kept)] = kept
    out["n_boxes"] = np.int64(len(kept))
    heat = out["heatmap"][0]
    # Larger boxes first: where two centres share a cell, the smaller rod's regression wins (it
    # is the one whose peak is narrowest and the easiest to lose).
    for cx, cy, length, box_w, angle in kept[np.argsort(-kept[:, 2] * kept[:, 3], kind="stable")]:
        gx, gy = cx / stride, cy / stride
        ix, iy = min(max(int(gx), 0), w - 1), min(max(int(gy), 0), h - 1)
        s_len, s_wid = max(length / stride / 6, MIN_SIGMA), max(box_w / stride / 6, MIN_SIGMA)
        reach = int(math.ceil(3 * max(s_len, s_wid)))
        x0, x1, y0, y1 = max(ix - reach, 0), min(ix + reach + 1, w), max(iy - reach, 0), min(iy + reach + 1, h)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xs - ix, ys - iy
        c, s = math.cos(angle), math.sin(angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        g = np.exp(-(u * u) / (2 * s_len * s_len) - (v * v) / (2 * s_wid * s_wid))
        np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])
        out["size"][:, iy, ix] = (math.log(max(length, LOG_EPS)), math.log(max(box_w, LOG_EPS)))
        out["angle"][:, iy, ix] = (math.cos(2 * angle), math.sin(2 * angle))
        out["offset"][:, iy, ix] = (gx - ix, gy - iy)
        out["reg_mask"][0, iy, ix] = 1.0
    return out


@dataclass(frozen=True)
class DecodeSettings:
    """How maps become boxes: at most ``max_detections`` peaks scoring ``score_threshold`` or more,
    then rotated NMS at ``nms_iou`` (crossing rods overlap little, so 0.5 keeps them)."""

    score_threshold: float = 0.05
    max_detections: int = 1000
    nms_iou: float = 0.5


def decode_maps(heatmap: np.ndarray, size: np.ndarray, angle: np.ndarray, offset: np.ndarray, stride: int = 4,
                settings: DecodeSettings = DecodeSettings(), probabilities: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 5)`` and scores ``(N,)`` (highest first) of one image's maps.

    Args:
        heatmap: ``(1, h, w)`` probabilities (or logits with ``probabilities=False``).
        size, angle, offset: ``(2, h, w)`` maps as :func:`encode_targets` writes them.
    """
    heat = np.asarray(heatmap, dtype=np.float32)[0]
    if not probabilities:
        heat = 1.0 / (1.0 + np.exp(-heat))
    peaks = heat == cv2.dilate(heat, np.ones((3, 3), np.uint8))  # a cell that is the maximum of its 3x3
    candidates = np.nonzero(peaks & (heat >= settings.score_threshold))
    scores = heat[candidates]
    order = np.argsort(-scores, kind="stable")[:settings.max_detections]
    iy, ix = candidates[0][order], candidates[1][order]
    scores = scores[order].astype(np.float64)
    cx = (ix + offset[0, iy, ix]) * stride
    cy = (iy + offset[1, iy, ix]) * stride
    length, width = np.exp(size[0, iy, ix]), np.exp(size[1, iy, ix])
    theta = np.arctan2(angle[1, iy, ix], angle[0, iy, ix]) / 2
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2
    boxes = np.stack([cx, cy, length, width, theta], axis=1).astype(np.float64).reshape(-1, 5)
    keep = rotated_nms(boxes, scores, settings.nms_iou)
    return boxes[keep], scores[keep]
