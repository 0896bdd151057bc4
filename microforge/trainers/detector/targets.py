"""Between oriented boxes and the detector's maps: targets, decoding, crops and augmentation.

:func:`encode_targets` turns the boxes of one image into dense arrays (so a batch of images with
any number of rods is a batch of equal-shaped tensors through Ray Data): an oriented Gaussian
heatmap peaking at 1 in each centre cell (sigmas a sixth of the rod's length and width, at least
:data:`MIN_SIGMA` cells: a slender rod's peak is as narrow as the rod), the regression maps, and
the boxes themselves padded to ``max_boxes`` with their count (for AP during validation). Size
and angle are regressed over the rod's Gaussian, not only at its centre (TTFNet's Gaussian-weighted
regression: many times more supervised cells per rod, which is what a CPU budget lacks): each cell
where a rod's Gaussian is at least :data:`REG_MIN_WEIGHT` carries the size and angle of the rod
whose Gaussian is highest there, weighted by that value (per cell: a long rod has more cells and
weighs more). The offset is regressed at centre cells. Every cell on a rod up to
:data:`END_REACH` x its length from its centre carries the distance along the axis to the rod's
end on the cell's side (its owner chosen the same way).
:func:`decode_maps` inverts it: peaks (3x3 maximum), sub-cell offset, ``exp`` of the log sizes,
``atan2(sin 2θ, cos 2θ) / 2``, the length measured from two cells part-way out along the axis
(:func:`probe_ends`), then rotated NMS.

Augmentation (:func:`augment`) moves image and boxes together: horizontal and vertical flips and
90-degree rotations (exact on the pixel grid), then brightness, contrast and Gaussian blur of the
image alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from microforge.datasets.obb import normalise_angle
from microforge.datasets.rotated import clip_box_array, rotated_nms
from microforge.platform.errors import ConfigError

__all__ = ["COUNT_SCORE", "COUNT_SCORE_GRID", "Augmentation", "DecodeSettings", "MIN_SIGMA", "REG_MIN_WEIGHT",
           "SCALE_RANGE", "augment", "check_scale", "crop", "decode_maps", "encode_targets", "probe_ends", "rescale",
           "scale_boxes"]

MIN_SIGMA = 0.6  # cells
REG_MIN_WEIGHT = 0.3  # cells where a rod's Gaussian is lower carry no size / angle target
LOG_EPS = 1e-3  # px: keeps log sizes finite for a degenerate label
MIN_END_DISTANCE = 1.0  # px: the end-distance target of a cell at or past a short rod's end
END_REACH = 0.4  # end distances are learnt up to this x the rod's length from its centre
MIN_PROBED_CELLS = 4  # rods shorter than this many cells keep their regressed length
SCALE_RANGE = (0.05, 4.0)  # input resize factors a detector accepts
COUNT_SCORE = 0.3  # detections at or above this score count as rods, unless the artifact records its own
# Thresholds validation chooses the count score from (the one with the least count error).
COUNT_SCORE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def check_scale(scale: float, what: str = "input_scale") -> float:
    """``scale`` as a float in :data:`SCALE_RANGE`.

    Raises:
        ConfigError: anything else.
    """
    lo, hi = SCALE_RANGE
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not lo <= scale <= hi:
        raise ConfigError(f"{what} must be a number in [{lo:g}, {hi:g}], got {scale!r}")
    return float(scale)


def rescale(image: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(H, W)`` resized by ``factor`` (:func:`~microforge.trainers.predict.resize_image`)
    and its boxes ``(N, 5)`` in the resized pixels; :func:`scale_boxes` with ``1 / factor`` maps
    detections back."""
    from microforge.trainers.predict import resize_image

    if factor == 1.0:
        return image, boxes
    h, w = image.shape[:2]
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    return resize_image(image, shape), scale_boxes(boxes, factor)


def scale_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Boxes ``(N, 5)`` with centres, lengths and widths multiplied by ``factor``, angles kept."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    out[:, :4] *= factor
    return out


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
    return window, clip_box_array(shifted, size, size, min_visible_fraction)[0]


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
        cells: where the offset is regressed), ``reg_weight (1, h, w)`` (the weight of the size and
        angle targets: the owning rod's Gaussian, 0 below :data:`REG_MIN_WEIGHT`),
        ``end_distance (1, h, w)`` (log px along the owning rod's axis from the cell's middle to its
        end on the cell's side of its centre) and ``end_mask (1, h, w)`` (1 where that is learnt: on
        a rod, within :data:`END_REACH` x its length of its centre), ``boxes (max_boxes, 5)``
        (zero-padded, the first ``max_boxes`` only) and ``n_boxes`` (the count, int64 scalar),
        where ``h, w = height // stride, width // stride``.
    """
    h, w = height // stride, width // stride
    out = {
        "heatmap": np.zeros((1, h, w), np.float32),
        "size": np.zeros((2, h, w), np.float32),
        "angle": np.zeros((2, h, w), np.float32),
        "offset": np.zeros((2, h, w), np.float32),
        "reg_mask": np.zeros((1, h, w), np.float32),
        "reg_weight": np.zeros((1, h, w), np.float32),
        "end_distance": np.zeros((1, h, w), np.float32),
        "end_mask": np.zeros((1, h, w), np.float32),
        "boxes": np.zeros((max_boxes, 5), np.float32),
        "n_boxes": np.int64(0),
    }
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    kept = boxes[:max_boxes]
    out["boxes"][:len(kept)] = kept
    out["n_boxes"] = np.int64(len(kept))
    if not len(kept):
        return out
    gx, gy = kept[:, 0] / stride, kept[:, 1] / stride
    ix, iy = np.clip(np.floor(gx), 0, w - 1).astype(np.int64), np.clip(np.floor(gy), 0, h - 1).astype(np.int64)
    s_len = np.maximum(kept[:, 2] / stride / 6, MIN_SIGMA)
    s_wid = np.maximum(kept[:, 3] / stride / 6, MIN_SIGMA)
    c, s = np.cos(kept[:, 4]), np.sin(kept[:, 4])
    reach = np.ceil(3 * np.maximum(s_len, s_wid)).astype(np.int64)
    heat = out["heatmap"].reshape(-1)
    strong_parts, foot_parts = [], []  # (cell, box, Gaussian): where it is high enough; on the rod
    for r in np.unique(reach):  # boxes of one reach share a patch grid (a few dozen groups at most)
        sel = np.flatnonzero(reach == r)
        dy, dx = (d.astype(np.float64) for d in np.mgrid[-r:r + 1, -r:r + 1])
        cs, sn = c[sel, None, None], s[sel, None, None]
        u, v = dx * cs + dy * sn, -dx * sn + dy * cs
        g = np.exp(-(u * u) / (2 * s_len[sel, None, None] ** 2) - (v * v) / (2 * s_wid[sel, None, None] ** 2))
        ys, xs = iy[sel, None, None] + dy.astype(np.int64), ix[sel, None, None] + dx.astype(np.int64)
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        np.maximum.at(heat, (ys * w + xs)[inside], g[inside].astype(np.float32))
        # The cell's middle relative to the exact centre, in px, along and across the rod: the
        # patch's (u, v) in px plus the centre cell's middle relative to the exact centre.
        ex, ey = (ix[sel] + 0.5) * stride - kept[sel, 0], (iy[sel] + 0.5) * stride - kept[sel, 1]
        along = stride * u + (ex * c[sel] + ey * s[sel])[:, None, None]
        across = stride * v + (-ex * s[sel] + ey * c[sel])[:, None, None]
        on_rod = inside & (np.abs(along) <= END_REACH * kept[sel, 2, None, None]) & \
            (np.abs(across) <= np.maximum(kept[sel, 3, None, None] / 2, 0.75 * stride))
        boxes_of = np.broadcast_to(sel[:, None, None], g.shape)
        for parts, where in ((strong_parts, inside & (g >= REG_MIN_WEIGHT)), (foot_parts, on_rod)):
            parts.append(((ys * w + xs)[where], boxes_of[where], g[where]))
    area = kept[:, 2] * kept[:, 3]
    cells, box, weight = _owned(strong_parts, area)
    cy, cx = np.divmod(cells, w)
    out["size"][:, cy, cx] = np.log(np.maximum(kept[box, 2:4], LOG_EPS)).T
    out["angle"][:, cy, cx] = np.stack([np.cos(2 * kept[box, 4]), np.sin(2 * kept[box, 4])])
    out["reg_weight"][0, cy, cx] = weight
    centre = (iy[box] == cy) & (ix[box] == cx)  # a rod's own centre cell, where its offset is regressed
    out["offset"][:, cy[centre], cx[centre]] = np.stack([gx[box[centre]] - cx[centre], gy[box[centre]] - cy[centre]])
    out["reg_mask"][0, cy[centre], cx[centre]] = 1.0
    # Along the axis from the cell's middle to the rod's end on the cell's side of its centre.
    cells, box, _ = _owned(foot_parts, area)
    cy, cx = np.divmod(cells, w)
    along = ((cx + 0.5) * stride - kept[box, 0]) * c[box] + ((cy + 0.5) * stride - kept[box, 1]) * s[box]
    out["end_distance"][0, cy, cx] = np.log(np.maximum(kept[box, 2] / 2 - np.abs(along), MIN_END_DISTANCE))
    out["end_mask"][0, cy, cx] = 1.0
    return out


def _owned(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
           area: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cells, boxes, Gaussians)`` with one entry per cell: the rod whose Gaussian is highest
    there; on a tie (two centres in one cell), the smaller rod: its peak is the narrowest and the
    easiest to lose."""
    cells, box, weight = (np.concatenate(part) for part in zip(*parts))
    order = np.lexsort((-area[box], weight, cells))  # by cell, then weight, then smaller area last
    last = len(order) - 1 - np.unique(cells[order][::-1], return_index=True)[1]
    return cells[order[last]], box[order[last]], weight[order[last]]


@dataclass(frozen=True)
class DecodeSettings:
    """How maps become boxes: at most ``max_detections`` peaks scoring ``score_threshold`` or more,
    then rotated NMS at ``nms_iou`` (crossing rods overlap little, so 0.5 keeps them). With an
    end-distance map, each box's length comes from two probes on its axis, ``end_probe`` x its
    regressed length either side of its centre (0: the regressed length)."""

    score_threshold: float = 0.05
    max_detections: int = 1000
    nms_iou: float = 0.5
    end_probe: float = 0.15

    def __post_init__(self) -> None:
        if not 0 <= self.end_probe < END_REACH:
            raise ConfigError(f"end_probe must be in [0, {END_REACH}) (end distances are learnt up to "
                              f"{END_REACH} x a rod's length from its centre), got {self.end_probe}")


def decode_maps(heatmap: np.ndarray, size: np.ndarray, angle: np.ndarray, offset: np.ndarray, stride: int = 4,
                settings: DecodeSettings = DecodeSettings(), probabilities: bool = True,
                end_distance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 5)`` and scores ``(N,)`` (highest first) of one image's maps.

    Args:
        heatmap: ``(1, h, w)`` probabilities (or logits with ``probabilities=False``).
        size, angle, offset: ``(2, h, w)`` maps as :func:`encode_targets` writes them.
        end_distance: ``(1, h, w)`` as :func:`encode_targets` writes it, or None: lengths as regressed.
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
    if end_distance is not None and settings.end_probe > 0 and len(boxes):
        boxes = probe_ends(boxes, np.asarray(end_distance, dtype=np.float32)[0], stride, settings.end_probe)
    keep = rotated_nms(boxes, scores, settings.nms_iou)
    return boxes[keep], scores[keep]


def probe_ends(boxes: np.ndarray, end_distance: np.ndarray, stride: int, probe: float) -> np.ndarray:
    """Boxes ``(N, 5)`` whose ends are measured from two cells on their axis, ``probe`` x their
    length either side of the centre: each end lies ``end_distance (h, w)`` (log px) beyond the
    middle of its cell, along the axis, and the centre moves to the middle of the two ends.

    A rod longer than the network's field of view cannot be measured from its centre cell, which
    sees neither end; a cell part-way out sees the end on its side. The cell holding the probe
    point is read, not an interpolation: a thin rod is one cell wide, and its neighbours' values
    belong to other rods or to none. A side keeps its regressed half-length where the probe
    point leaves the map, where its cell's middle lies outside the :data:`END_REACH` band that
    was trained, or for a rod shorter than :data:`MIN_PROBED_CELLS` cells (its end distances are
    a pixel or two, below what the map resolves)."""
    h, w = end_distance.shape
    c, s = np.cos(boxes[:, 4]), np.sin(boxes[:, 4])
    half, offset = boxes[:, 2] / 2, probe * boxes[:, 2]
    long_enough = boxes[:, 2] >= MIN_PROBED_CELLS * stride
    reach = []
    for sign in (1.0, -1.0):
        fx = np.floor((boxes[:, 0] + sign * offset * c) / stride)
        fy = np.floor((boxes[:, 1] + sign * offset * s) / stride)
        on_map = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
        ix, iy = np.clip(fx, 0, w - 1).astype(np.int64), np.clip(fy, 0, h - 1).astype(np.int64)
        # The cell measures the end on its own side of the centre, which is the probe's side but
        # for a rod so short that the probe stays in the centre's neighbourhood (symmetric then).
        along = np.abs(((ix + 0.5) * stride - boxes[:, 0]) * c + ((iy + 0.5) * stride - boxes[:, 1]) * s)
        usable = long_enough & on_map & (along <= END_REACH * boxes[:, 2])
        reach.append(np.where(usable, along + np.exp(end_distance[iy, ix].astype(np.float64)), half))
    out = boxes.copy()
    out[:, 2] = reach[0] + reach[1]
    shift = (reach[0] - reach[1]) / 2
    out[:, 0] += shift * c
    out[:, 1] += shift * s
    return out
