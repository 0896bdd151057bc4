"""Binary segmentation metrics per image: overlap, Hausdorff (HD95) and boundary F1.

Inputs are predictions and targets as torch tensors or numpy arrays of shape ``(B, 1, H, W)``,
``(B, H, W)`` or ``(H, W)``. Predictions are binarised with ``pred > threshold``: pass
probabilities with the default ``threshold=0.5``, logits with ``threshold=0.0``, or masks. The
target is binarised with ``target > 0.5``. Each metric is computed per image; with
``reduction="mean"`` the per-image values are averaged (a float), with ``reduction="none"``
they come back as a float64 array of shape ``(B,)`` (e.g. to bin by SNR).

Conventions for empty masks (so that no metric is ever 0/0):

* Dice, IoU, precision, recall, boundary precision/recall/F1: a ratio whose denominator is 0
  is 1.0 when prediction and target are both empty and 0.0 otherwise (an empty prediction on a
  non-empty target has precision 0; a non-empty prediction on an empty target has recall 0).
* HD95: 0.0 when both are empty; the image diagonal ``sqrt(H**2 + W**2)``, the largest
  distance possible inside the image, when exactly one is empty, so that a model that misses
  the object (or hallucinates one) is penalised rather than left out of the mean.

``clean_dice`` is :func:`dice_score` on the predictions for the noise-free rendering of an
image; trainers log it under the name ``clean_dice`` as the early warning for a model that
learned to predict background.

Distances are Euclidean in pixels, from :func:`scipy.ndimage.distance_transform_edt`.
torchmetrics 1.9 has no percentile Hausdorff distance, hence the scipy implementation.
Nothing here imports Ray.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "binarize",
    "boundary_f1",
    "boundary_scores",
    "dice_score",
    "hausdorff_distance",
    "iou_score",
    "mask_boundary",
    "precision_score",
    "recall_score",
    "segmentation_metrics",
]

Reduction = Literal["mean", "none"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def binarize(x: Any, threshold: float = 0.5) -> np.ndarray:
    """``x > threshold`` as a bool array of shape ``(B, H, W)``.

    Accepts a torch tensor or array of shape ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)``.

    Raises:
        ValueError: any other shape (e.g. more than one channel).
    """
    a = _to_numpy(x)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        a = a[None]
    elif a.ndim != 3:
        raise ValueError(f"expected a binary mask of shape (B, 1, H, W), (B, H, W) or (H, W), got {a.shape}")
    return a > threshold


def _pair(pred: Any, target: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    p, t = binarize(pred, threshold), binarize(target, 0.5)
    if p.shape != t.shape:
        raise ValueError(f"prediction and target shapes differ: {p.shape} vs {t.shape}")
    return p, t


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    num, den = num.astype(np.float64), den.astype(np.float64)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.where(den > 0, out, np.where(both_empty, 1.0, 0.0))


def _reduce(values: np.ndarray, reduction: Reduction) -> float | np.ndarray:
    if reduction == "none":
        return values
    if reduction == "mean":
        return float(values.mean())
    raise ValueError(f"unknown reduction '{reduction}'; valid: 'mean', 'none'")


def _counts(p: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    axes = (1, 2)
    return {
        "tp": (p & t).sum(axes),
        "fp": (p & ~t).sum(axes),
        "fn": (~p & t).sum(axes),
        "empty": ~(p.any(axes) | t.any(axes)),
    }


def _overlap(p: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    c = _counts(p, t)
    tp, fp, fn, empty = c["tp"], c["fp"], c["fn"], c["empty"]
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "iou": _ratio(tp, tp + fp + fn, empty),
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
    }


def dice_score(pred: Any, target: Any, threshold: float = 0.5, reduction: Reduction = "mean") -> float | np.ndarray:
    """Dice ``2|P & T| / (|P| + |T|)`` per image (see the module doc for shapes and empties)."""
    return _reduce(_overlap(*_pair(pred, target, threshold))["dice"], reduction)


def iou_score(pred: Any, target: Any, threshold: float = 0.5, reduction: Reduction = "mean") -> float | np.ndarray:
    """Intersection over union ``|P & T| / |P | T|`` per image."""
    return _reduce(_overlap(*_pair(pred, target, threshold))["iou"], reduction)


def precision_score(
    pred: Any, target: Any, threshold: float = 0.5, reduction: Reduction = "mean"
) -> float | np.ndarray:
    """Pixel precision ``|P & T| / |P|`` per image."""
    return _reduce(_overlap(*_pair(pred, target, threshold))["precision"], reduction)


def recall_score(pred: Any, target: Any, threshold: float = 0.5, reduction: Reduction = "mean") -> float | np.ndarray:
    """Pixel recall ``|P & T| / |T|`` per image."""
    return _reduce(_overlap(*_pair(pred, target, threshold))["recall"], reduction)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a 2-D bool mask: pixels of the mask with a 4-neighbour outside it.

    Pixels on the image edge count as boundary (outside the image is background).
    """
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of a non-empty ``mask``."""
    return ndimage.distance_transform_edt(~mask)


def _hd_one(p: np.ndarray, t: np.ndarray, percentile: float) -> float:
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float(np.hypot(*p.shape))
    bp, bt = mask_boundary(p), mask_boundary(t)
    d_pt = _distance_to(bt)[bp]
    d_tp = _distance_to(bp)[bt]
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def hausdorff_distance(
    pred: Any,
    target: Any,
    percentile: float = 95.0,
    threshold: float = 0.5,
    reduction: Reduction = "mean",
) -> float | np.ndarray:
    """Symmetric percentile Hausdorff distance between mask boundaries, in pixels (HD95).

    For each boundary pixel of one mask, the Euclidean distance to the nearest boundary pixel
    of the other; the result is the larger of the two directed ``percentile``-th percentiles
    (MONAI's definition). ``percentile=100`` is the classical Hausdorff distance. Empty masks:
    0 if both are empty, the image diagonal if exactly one is.

    Raises:
        ValueError: shapes differ, are not a single-channel mask, or ``percentile`` is not in [0, 100].
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    p, t = _pair(pred, target, threshold)
    values = np.array([_hd_one(pi, ti, percentile) for pi, ti in zip(p, t)], dtype=np.float64)
    return _reduce(values, reduction)


def _boundary_one(p: np.ndarray, t: np.ndarray, tolerance: float) -> tuple[float, float, float]:
    bp, bt = mask_boundary(p), mask_boundary(t)
    n_p, n_t = int(bp.sum()), int(bt.sum())
    if n_p == 0 and n_t == 0:
        return 1.0, 1.0, 1.0
    if n_p == 0 or n_t == 0:
        return 0.0, 0.0, 0.0
    precision = float((_distance_to(bt)[bp] <= tolerance).mean())
    recall = float((_distance_to(bp)[bt] <= tolerance).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def boundary_scores(
    pred: Any,
    target: Any,
    tolerance: float = 2.0,
    threshold: float = 0.5,
    reduction: Reduction = "mean",
) -> dict[str, float | np.ndarray]:
    """Boundary precision, recall and F1 (Csurka 2013; the DAVIS contour accuracy).

    A boundary pixel of the prediction is a hit when a target boundary pixel lies within
    ``tolerance`` pixels (Euclidean), and vice versa for recall; F1 is their harmonic mean,
    computed per image before averaging. ``tolerance=0`` asks for exact matches.

    Returns:
        ``{"precision": ..., "recall": ..., "f1": ...}``, each a float or a ``(B,)`` array.

    Raises:
        ValueError: shapes differ, are not a single-channel mask, or ``tolerance < 0``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    p, t = _pair(pred, target, threshold)
    rows = np.array([_boundary_one(pi, ti, tolerance) for pi, ti in zip(p, t)], dtype=np.float64).reshape(-1, 3)
    return {name: _reduce(rows[:, i], reduction) for i, name in enumerate(("precision", "recall", "f1"))}


def boundary_f1(
    pred: Any,
    target: Any,
    tolerance: float = 2.0,
    threshold: float = 0.5,
    reduction: Reduction = "mean",
) -> float | np.ndarray:
    """Boundary F1 within ``tolerance`` pixels; see :func:`boundary_scores`."""
    return boundary_scores(pred, target, tolerance, threshold, reduction)["f1"]


def segmentation_metrics(
    pred: Any,
    target: Any,
    threshold: float = 0.5,
    tolerance: float = 2.0,
    reduction: Reduction = "mean",
) -> dict[str, float | np.ndarray]:
    """Every metric in one pass: ``dice, iou, precision, recall, hd95, boundary_f1``.

    Shapes and conventions as in the module doc; ``tolerance`` is the boundary-F1 tolerance.
    """
    p, t = _pair(pred, target, threshold)
    values = _overlap(p, t)
    values["hd95"] = np.array([_hd_one(pi, ti, 95.0) for pi, ti in zip(p, t)], dtype=np.float64)
    values["boundary_f1"] = np.array([_boundary_one(pi, ti, tolerance)[2] for pi, ti in zip(p, t)], dtype=np.float64)
    return {name: _reduce(v, reduction) for name, v in values.items()}
