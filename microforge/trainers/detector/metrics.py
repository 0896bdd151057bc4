"""Detection metrics on oriented boxes: matching by rotated IoU and average precision.

AP follows COCO / DOTA: detections of all images ranked by score; each is a true positive when
its best still-unmatched ground-truth box in the same image has IoU >= the threshold (greedy, by
descending score); precision is made monotone (the interpolated envelope, from the right) and AP
is the area under that precision-recall curve (all-point interpolation, DOTA v1.5 / VOC 2010+).
AP@0.5:0.95 is the mean over thresholds 0.50, 0.55, ..., 0.95 (COCO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from microforge.datasets.rotated import rotated_iou_matrix

__all__ = ["COCO_THRESHOLDS", "ImageMatches", "PRCurve", "average_precision", "match_image", "pr_curve"]

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


@dataclass(frozen=True)
class ImageMatches:
    """Per-detection outcomes of one image at every threshold.

    Attributes:
        scores: ``(D,)`` detection scores.
        tp: ``(T, D)`` bool, detection d is a true positive at threshold t.
        matched_gt: ``(T, D)`` index of its ground-truth box, -1 when none.
        n_gt: number of ground-truth boxes.
    """

    scores: np.ndarray
    tp: np.ndarray
    matched_gt: np.ndarray
    n_gt: int


def match_image(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray,
                thresholds: Sequence[float] = COCO_THRESHOLDS, iou: np.ndarray | None = None) -> ImageMatches:
    """Greedy matching of the detections ``pred (D, 5)`` of one image to its ground truth ``gt (G, 5)``."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
    iou = rotated_iou_matrix(pred, gt) if iou is None else iou
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros((len(thresholds), len(pred)), dtype=bool)
    matched = np.full((len(thresholds), len(pred)), -1, dtype=np.int64)
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(len(gt), dtype=bool)
        for d in order:
            if not len(gt):
                break
            candidates = np.where(taken, -1.0, iou[d])
            g = int(np.argmax(candidates))
            if candidates[g] >= threshold:
                taken[g] = True
                tp[t, d] = True
                matched[t, d] = g
    return ImageMatches(scores, tp, matched, len(gt))


@dataclass(frozen=True)
class PRCurve:
    """Recall and (interpolated) precision at each rank of the pooled detections, and the AP."""

    recall: np.ndarray
    precision: np.ndarray
    ap: float


def pr_curve(images: Sequence[ImageMatches], threshold_index: int = 0) -> PRCurve:
    """The pooled precision-recall curve of ``images`` at one threshold (see the module doc).

    No ground truth at all gives AP 0 with detections and 1 without (nothing to find, nothing wrong).
    """
    n_gt = sum(m.n_gt for m in images)
    scores = np.concatenate([m.scores for m in images]) if images else np.zeros(0)
    tp = np.concatenate([m.tp[threshold_index] for m in images]) if images else np.zeros(0, bool)
    if n_gt == 0:
        return PRCurve(np.zeros(0), np.zeros(0), 0.0 if len(scores) else 1.0)
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(tp[order])
    recall = hits / n_gt
    precision = hits / np.arange(1, len(order) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return PRCurve(recall, envelope, float(np.sum(steps * envelope)))


def average_precision(images: Sequence[ImageMatches], thresholds: Sequence[float] = COCO_THRESHOLDS) -> dict[str, float]:
    """``ap50`` (AP at the first threshold, 0.5 by default), ``ap50_95`` (mean over the thresholds)
    and ``ap_<t>`` for each threshold."""
    values = [pr_curve(images, t).ap for t in range(len(thresholds))]
    out = {f"ap_{int(round(th * 100))}": v for th, v in zip(thresholds, values)}
    out["ap50"] = values[0]
    out["ap50_95"] = float(np.mean(values))
    return out
