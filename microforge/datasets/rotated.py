"""Rotated-box overlap: polygon intersection, rotated IoU and rotated non-maximum suppression.

Boxes are arrays ``(N, 5)`` of ``cx, cy, length, width, angle`` in the convention of
:mod:`.obb` (pixels, angle of the length axis in radians). IoU is the exact area of the
intersection polygon of the two rectangles over the area of their union, as DOTA's evaluation
computes it; no rasterisation, no axis-aligned approximation. The polygon is the convex hull of
each rectangle's corners inside the other and of their edges' crossings, computed in float64 for
all pairs at once: NMS over a crystal image's thousand candidates and clipping a window's
hundreds of rods are array operations, not a Python loop per pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .obb import OrientedBox

__all__ = ["boxes_array", "boxes_corners", "clip_box_array", "intersection_areas", "rotated_iou",
           "rotated_iou_matrix", "rotated_nms"]


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


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether points ``(P, K, 2)`` lie in boxes ``(P, 5)`` (borders included, 1e-9 relative slack
    so a corner on the other box's edge counts whatever the rounding)."""
    c, s = np.cos(boxes[:, 4])[:, None], np.sin(boxes[:, 4])[:, None]
    dx, dy = points[..., 0] - boxes[:, 0, None], points[..., 1] - boxes[:, 1, None]
    slack = 1e-9 * (1.0 + np.abs(boxes[:, 2:4]).sum(axis=1))[:, None]
    return ((np.abs(dx * c + dy * s) <= boxes[:, 2, None] / 2 + slack)
            & (np.abs(-dx * s + dy * c) <= boxes[:, 3, None] / 2 + slack))


def _intersection_vertices(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(P, 24, 2)`` and their validity ``(P, 24)`` of the intersection of boxes
    ``a[k]`` and ``b[k]`` (``(P, 5)`` each), unordered: the corners of each inside the other and
    the crossings of their edges (every vertex of the intersection of two convex polygons is one
    of these)."""
    ca, cb = boxes_corners(a), boxes_corners(b)
    p, r = ca[:, :, None, :], (np.roll(ca, -1, axis=1) - ca)[:, :, None, :]  # edges of a: p + t r
    q, e = cb[:, None, :, :], (np.roll(cb, -1, axis=1) - cb)[:, None, :, :]  # edges of b: q + u e
    denom = _cross(r, e)
    # Parallel edges never cross (where they overlap, the corners inside the other box are the
    # vertices). Rounding leaves ~1e-13 of a parallel pair's cross product: noise over noise would
    # put a "crossing" anywhere, so parallel is decided relative to the edges' lengths.
    parallel = np.abs(denom) <= 1e-9 * np.hypot(r[..., 0], r[..., 1]) * np.hypot(e[..., 0], e[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t, u = _cross(q - p, e) / denom, _cross(q - p, r) / denom
        hits = p + t[..., None] * r
    eps = 1e-12
    crossing = ~parallel & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    n = len(a)
    points = np.concatenate([ca, cb, np.where(crossing[..., None], hits, 0.0).reshape(n, 16, 2)], axis=1)
    valid = np.concatenate([_inside(ca, b), _inside(cb, a), crossing.reshape(n, 16)], axis=1)
    return points, valid


def _hull_areas(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Areas ``(N,)`` of the convex hulls of the valid points of each row (angle-sorted shoelace)."""
    count = valid.sum(axis=1)
    safe = np.maximum(count, 1)[:, None]
    centre = np.where(valid[..., None], points, 0.0).sum(axis=1) / safe
    theta = np.arctan2(points[..., 1] - centre[:, 1, None], points[..., 0] - centre[:, 0, None])
    order = np.argsort(np.where(valid, theta, np.inf), axis=1, kind="stable")
    ring = np.take_along_axis(points, order[..., None], axis=1)
    first = ring[:, :1]
    ring = np.where((np.arange(points.shape[1]) < count[:, None])[..., None], ring, first)  # pad with the start
    nxt = np.roll(ring, -1, axis=1)
    return np.abs((ring[..., 0] * nxt[..., 1] - nxt[..., 0] * ring[..., 1]).sum(axis=1)) / 2


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Areas ``(P,)`` of the intersections of boxes ``a[k]`` and ``b[k]`` (``(P, 5)`` each): exact
    polygon intersection, all pairs at once."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
    return _hull_areas(*_intersection_vertices(a, b))


def rotated_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes ``(cx, cy, length, width, angle)``; 0 when either has no area."""
    area_a, area_b = float(a[2]) * float(a[3]), float(b[2]) * float(b[3])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = float(intersection_areas(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))[0])
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
    area_a, area_b = a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]
    i, j = np.nonzero((dist < ra[:, None] + rb[None, :]) & (area_a[:, None] > 0) & (area_b[None, :] > 0))
    inter = intersection_areas(a[i], b[j])
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
    b = boxes[order]
    radius, area = np.hypot(b[:, 2], b[:, 3]) / 2, b[:, 2] * b[:, 3]
    dist = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1])
    i, j = np.nonzero(np.triu(dist < radius[:, None] + radius[None, :], k=1))  # i ranks above j
    # IoU <= smaller area / larger area: pairs that cannot pass the threshold are not clipped.
    small, large = np.minimum(area[i], area[j]), np.maximum(area[i], area[j])
    near = (small > 0) & (small > iou_threshold * large)
    i, j = i[near], j[near]
    inter = intersection_areas(b[i], b[j])
    over = inter / (area[i] + area[j] - inter) > iou_threshold
    i, j = i[over], j[over]  # still sorted by i
    starts = np.searchsorted(i, np.arange(len(b) + 1))
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for k in range(len(b)):
        if not suppressed[k]:
            keep.append(order[k])
            suppressed[j[starts[k]:starts[k + 1]]] = True
    return np.asarray(keep, dtype=np.int64)


def _image_boxes(n: int, width: float, height: float) -> np.ndarray:
    return np.tile([width / 2, height / 2, width, height, 0.0], (n, 1)).astype(np.float64)


def clip_box_array(boxes: np.ndarray, width: float, height: float,
                   min_visible_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~.obb.clip_boxes` on arrays: boxes ``(N, 5)`` clipped to [0, W] x [0, H].

    Returns:
        ``(kept, index, truncated)``: the kept boxes ``(K, 5)`` in input order, angles
        normalised to [-pi/2, pi/2) (those the border cut replaced by the tight box of their
        visible part in their own orientation), their input positions ``(K,)``, and ``(K,)``
        bool, True where the border cut the box.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    b[:, 4] = (b[:, 4] + math.pi / 2) % math.pi - math.pi / 2  # as obb.normalise_angle
    corners = boxes_corners(b)
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    inside = (lo[:, 0] >= 0) & (hi[:, 0] <= width) & (lo[:, 1] >= 0) & (hi[:, 1] <= height)
    cut = np.flatnonzero(~inside & (hi[:, 0] > 0) & (lo[:, 0] < width) & (hi[:, 1] > 0) & (lo[:, 1] < height))
    keep = inside.copy()
    if len(cut):
        sub = b[cut]
        points, valid = _intersection_vertices(sub, _image_boxes(len(sub), width, height))
        full, visible = sub[:, 2] * sub[:, 3], _hull_areas(points, valid)
        ok = (full > 0) & (visible > 0) & (visible >= min_visible_fraction * full)
        sub, points, valid = sub[ok], points[ok], valid[ok]
        c, s = np.cos(sub[:, 4])[:, None], np.sin(sub[:, 4])[:, None]
        along = points[..., 0] * c + points[..., 1] * s      # coordinate on the length axis u
        across = -points[..., 0] * s + points[..., 1] * c    # coordinate on the width axis v
        u_lo, u_hi = np.where(valid, along, np.inf).min(axis=1), np.where(valid, along, -np.inf).max(axis=1)
        v_lo, v_hi = np.where(valid, across, np.inf).min(axis=1), np.where(valid, across, -np.inf).max(axis=1)
        mid_u, mid_v = (u_lo + u_hi) / 2, (v_lo + v_hi) / 2
        c, s = c[:, 0], s[:, 0]
        b[cut[ok]] = np.stack([mid_u * c - mid_v * s, mid_u * s + mid_v * c, u_hi - u_lo, v_hi - v_lo, sub[:, 4]],
                              axis=1)
        keep[cut[ok]] = True
    return b[keep], np.flatnonzero(keep), ~inside[keep]
