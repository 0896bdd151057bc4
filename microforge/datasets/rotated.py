"""Rotated-box overlap: polygon intersection, rotated IoU and rotated non-maximum suppression.

Boxes are arrays ``(N, 5)`` of ``cx, cy, length, width, angle`` in the convention of
:mod:`.obb` (pixels, angle of the length axis in radians). IoU is the exact area of the
intersection polygon of the two rectangles (convex clipping, float64) over the area of their
union, as DOTA's evaluation computes it; no rasterisation, no axis-aligned approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .obb import OrientedBox, box_corners

__all__ = ["boxes_array", "boxes_corners", "convex_intersection_area", "rotated_iou", "rotated_iou_matrix",
           "rotated_nms"]


def boxes_array(boxes: Sequence[OrientedBox]) -> np.ndarray:
    """``(N, 5)`` float64 ``cx, cy, length, width, angle`` of oriented boxes."""
    return np.array([(b.cx, b.cy, b.length, b.width, b.angle) for b in boxes], dtype=np.float64).reshape(-1, 5)


def boxes_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners ``(N, 4, 2)`` of boxes ``(N, 5)``, in the order of :func:`~.obb.box_corners`."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    c, s = np.cos(b[:, 4]), np.sin(b[:, 4])
    ux, uy = c * b[:, 2] / 2, s * b[:, 2] / 2
    vx, vy = -s * b[:, 3] / 2, c * b[:, 3] / 2
    xs = np.stack([b[:, 0] + ux + vx, b[:, 0] - ux + vx, b[:, 0] - ux - vx, b[:, 0] + ux - vx], axis=1)
    ys = np.stack([b[:, 1] + uy + vy, b[:, 1] - uy + vy, b[:, 1] - uy - vy, b[:, 1] + uy - vy], axis=1)
    return np.stack([xs, ys], axis=2)


def _ccw(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(poly, poly[1:] + poly[:1]))
    return poly if area2 >= 0 else poly[::-1]


def _area(poly: list[tuple[float, float]]) -> float:
    if len(poly) < 3:
        return 0.0
    return abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(poly, poly[1:] + poly[:1]))) / 2


def convex_intersection_area(a: np.ndarray, b: np.ndarray) -> float:
    """Area of the intersection of two convex polygons ``(N, 2)`` and ``(M, 2)`` (any winding).

    Sutherland-Hodgman: ``a`` clipped by each edge of ``b`` in turn, on Python floats (a few
    vertices cost less than numpy's per-call overhead).
    """
    subject = _ccw([(float(x), float(y)) for x, y in np.asarray(a, dtype=np.float64).reshape(-1, 2)])
    clip = _ccw([(float(x), float(y)) for x, y in np.asarray(b, dtype=np.float64).reshape(-1, 2)])
    for p, q in zip(clip, clip[1:] + clip[:1]):
        if not subject:
            return 0.0
        ex, ey = q[0] - p[0], q[1] - p[1]
        # side > 0: left of p->q, inside a counter-clockwise polygon
        sides = [ex * (v[1] - p[1]) - ey * (v[0] - p[0]) for v in subject]
        kept = []
        for i, v in enumerate(subject):
            j = (i + 1) % len(subject)
            sv, sw = sides[i], sides[j]
            if sv >= 0:
                kept.append(v)
            if (sv >= 0) != (sw >= 0):
                w = subject[j]
                t = sv / (sv - sw)
                kept.append((v[0] + t * (w[0] - v[0]), v[1] + t * (w[1] - v[1])))
        subject = kept
    return _area(subject)


def rotated_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes ``(cx, cy, length, width, angle)``; 0 when either has no area."""
    area_a, area_b = float(a[2]) * float(a[3]), float(b[2]) * float(b[3])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = convex_intersection_area(box_corners(*a), box_corners(*b))
    return inter / (area_a + area_b - inter)


def rotated_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of boxes ``a (N, 5)`` against ``b (M, 5)``.

    Pairs whose circumscribed circles do not meet are 0 without clipping: crystal images hold
    hundreds of rods, of which each overlaps a handful.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    ra, rb = np.hypot(a[:, 2], a[:, 3]) / 2, np.hypot(b[:, 2], b[:, 3]) / 2
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    corners_a, corners_b = boxes_corners(a), boxes_corners(b)
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    for i, j in zip(*np.nonzero(dist < ra[:, None] + rb[None, :])):
        if area_a[i] <= 0 or area_b[j] <= 0:
            continue
        inter = convex_intersection_area(corners_a[i], corners_b[j])
        out[i, j] = inter / (area_a[i] + area_b[j] - inter)
    return out


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, highest score first: a box is
    dropped when its rotated IoU with a kept, higher-scoring box exceeds ``iou_threshold``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not math.isfinite(iou_threshold) or not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    order = np.argsort(-scores, kind="stable")
    if not len(order):
        return order
    iou = rotated_iou_matrix(boxes[order], boxes[order])  # sparse in practice: the circle test skips most pairs
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for k in range(len(order)):
        if suppressed[k]:
            continue
        keep.append(order[k])
        suppressed |= iou[k] > iou_threshold
    return np.asarray(keep, dtype=np.int64)
