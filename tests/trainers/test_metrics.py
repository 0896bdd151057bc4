"""Segmentation metrics against hand-computed masks."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from microforge.trainers.metrics import (
    binarize,
    boundary_f1,
    boundary_scores,
    dice_score,
    hausdorff_distance,
    iou_score,
    mask_boundary,
    precision_score,
    recall_score,
    segmentation_metrics,
)


def square(lo_r: int, lo_c: int, side: int, size: int = 12) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.float32)
    m[lo_r : lo_r + side, lo_c : lo_c + side] = 1.0
    return m


A = square(2, 2, 4)  # 16 pixels
B = square(2, 3, 4)  # the same square shifted right by 1 px: 12 pixels overlap


def test_overlap_metrics_of_shifted_squares():
    assert dice_score(A, B) == pytest.approx(2 * 12 / 32)
    assert iou_score(A, B) == pytest.approx(12 / 20)
    assert precision_score(A, B) == pytest.approx(12 / 16)
    assert recall_score(A, B) == pytest.approx(12 / 16)


def test_precision_and_recall_are_not_symmetric():
    small = square(3, 3, 2)  # 4 pixels inside A
    assert precision_score(small, A) == 1.0
    assert recall_score(small, A) == pytest.approx(4 / 16)


def test_empty_conventions():
    empty = np.zeros((12, 12))
    for metric in (dice_score, iou_score, precision_score, recall_score):
        assert metric(empty, empty) == 1.0
        assert metric(empty, A) == 0.0
        assert metric(A, empty) == 0.0
    assert hausdorff_distance(empty, empty) == 0.0
    assert hausdorff_distance(empty, A) == pytest.approx(math.hypot(12, 12))
    assert hausdorff_distance(A, empty) == pytest.approx(math.hypot(12, 12))
    assert boundary_f1(empty, empty) == 1.0
    assert boundary_f1(A, empty) == 0.0


def test_accepts_torch_batches_thresholds_and_per_image_values():
    pred = torch.from_numpy(np.stack([A, B, A]))[:, None] * 0.9  # probabilities (3, 1, 12, 12)
    target = torch.from_numpy(np.stack([A, A, B]))[:, None]
    per_image = dice_score(pred, target, reduction="none")
    assert per_image.shape == (3,)
    assert per_image == pytest.approx([1.0, 0.75, 0.75])
    assert dice_score(pred, target) == pytest.approx(2.5 / 3)
    # Logits: threshold at 0.
    logits = 10 * (2 * pred - 0.9)
    assert dice_score(logits, target, threshold=0.0, reduction="none") == pytest.approx([1.0, 0.75, 0.75])
    assert binarize(A).shape == (1, 12, 12)


def test_rejects_multichannel_and_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        dice_score(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="shapes differ"):
        dice_score(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="reduction"):
        dice_score(A, B, reduction="sum")


def test_mask_boundary_of_a_square_is_its_perimeter():
    b = mask_boundary(A > 0)
    assert b.sum() == 12
    assert not b[3:5, 3:5].any()


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_hd95_of_a_shifted_square_is_the_shift(shift):
    a, b = square(2, 2, 6, size=16), square(2, 2 + shift, 6, size=16)
    assert hausdorff_distance(a, b) == pytest.approx(shift)
    assert hausdorff_distance(b, a) == pytest.approx(shift)
    assert hausdorff_distance(a, a) == 0.0


def test_hd100_matches_scipy_directed_hausdorff():
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = ndimage.gaussian_filter(rng.random((24, 24)), 2) > 0.5
        b = ndimage.gaussian_filter(rng.random((24, 24)), 2) > 0.5
        pa, pb = np.argwhere(mask_boundary(a)), np.argwhere(mask_boundary(b))
        expected = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
        assert hausdorff_distance(a, b, percentile=100) == pytest.approx(expected)
        assert hausdorff_distance(a, b) <= expected


def test_hd95_ignores_a_few_outlier_pixels():
    a = square(4, 4, 20, size=40)
    b = a.copy()
    b[36, 36] = 1.0  # one stray pixel 20+ px away: HD100 sees it, HD95 does not
    assert hausdorff_distance(a, b, percentile=100) > 15
    assert hausdorff_distance(a, b) == 0.0


def test_boundary_f1_tolerance_zero_vs_one():
    # Of each square's 12 boundary pixels, 6 lie on the other's boundary (see the HD test).
    exact = boundary_scores(A, B, tolerance=0)
    assert exact == {"precision": pytest.approx(0.5), "recall": pytest.approx(0.5), "f1": pytest.approx(0.5)}
    assert boundary_f1(A, B, tolerance=1) == 1.0
    assert boundary_f1(A, A, tolerance=0) == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f1(A, B, tolerance=-1)


def test_boundary_precision_recall_asymmetric():
    inner = square(3, 3, 2)  # 4 boundary pixels, each 1 px from A's boundary
    s = boundary_scores(inner, A, tolerance=1)
    assert s["precision"] == 1.0
    assert s["recall"] == pytest.approx(8 / 12)  # A's corners are sqrt(2) px away
    assert s["f1"] == pytest.approx(2 * (8 / 12) / (1 + 8 / 12))


def test_segmentation_metrics_agrees_with_the_single_metrics():
    pred, target = np.stack([A, B]), np.stack([B, B])
    all_metrics = segmentation_metrics(pred, target, tolerance=0, reduction="none")
    assert set(all_metrics) == {"dice", "iou", "precision", "recall", "hd95", "boundary_f1"}
    assert all_metrics["dice"] == pytest.approx(dice_score(pred, target, reduction="none"))
    assert all_metrics["iou"] == pytest.approx(iou_score(pred, target, reduction="none"))
    assert all_metrics["hd95"] == pytest.approx([1.0, 0.0])
    assert all_metrics["boundary_f1"] == pytest.approx([0.5, 1.0])
    assert segmentation_metrics(pred, target)["dice"] == pytest.approx(0.875)
