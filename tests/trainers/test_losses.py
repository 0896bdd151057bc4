"""Delineation losses against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from microforge.trainers.losses import (
    DelineationLoss,
    boundary_band,
    boundary_tversky_loss,
    dice_loss,
    tversky_loss,
)

torch.set_num_threads(1)


def square(size: int = 8, lo: int = 2, hi: int = 6) -> torch.Tensor:
    """(1, 1, size, size) mask with ones on rows and columns lo..hi-1."""
    t = torch.zeros(1, 1, size, size)
    t[..., lo:hi, lo:hi] = 1.0
    return t


def confident(mask: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    """Logits whose sigmoid is the mask to within 1e-13."""
    return scale * (2 * mask - 1)


def test_dice_perfect_prediction_is_zero_and_inverted_is_one():
    t = square(32, 8, 24)  # 256 of 1024 pixels
    assert dice_loss(confident(t), t).item() == pytest.approx(0.0, abs=1e-6)
    # Inverted: no overlap, |p| + |t| = 1024, so 1 - 1/1025.
    assert dice_loss(confident(1 - t), t).item() == pytest.approx(1 - 1 / 1025, abs=1e-6)


def test_dice_hand_computed_at_half_probability():
    t = square(4, 1, 3)  # 4 of 16 pixels
    # p = 0.5: intersection 2, |p| + |t| = 8 + 4 = 12 -> 1 - (2*2 + 1) / (12 + 1).
    assert dice_loss(torch.zeros_like(t), t).item() == pytest.approx(1 - 5 / 13, abs=1e-6)


def test_dice_empty_vs_empty_is_zero_thanks_to_smooth():
    t = torch.zeros(2, 1, 8, 8)
    assert dice_loss(confident(t), t).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_averages_images():
    t = torch.cat([square(4, 1, 3), square(4, 1, 3)])
    logits = torch.cat([confident(square(4, 1, 3)), torch.zeros(1, 1, 4, 4)])
    assert dice_loss(logits, t).item() == pytest.approx((0 + (1 - 5 / 13)) / 2, abs=1e-6)


def test_bce_part_equals_torch():
    torch.manual_seed(0)
    logits, t = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    _, parts = DelineationLoss()(logits, t)
    assert parts["bce"].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, t).item(), abs=1e-7)
    _, parts = DelineationLoss()(torch.zeros(1, 1, 4, 4), square(4, 1, 3))
    assert parts["bce"].item() == pytest.approx(math.log(2), abs=1e-7)


def test_boundary_band_is_dilation_minus_erosion():
    t = square(8, 2, 6)  # 4x4 square
    band = boundary_band(t, kernel_size=3)
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 1:7, 1:7] = 1.0  # dilation: 6x6
    expected[..., 3:5, 3:5] = 0.0  # minus erosion: 2x2
    assert torch.equal(band, expected)
    # 5x5: the dilation covers the whole 8x8 image and the erosion removes the whole square.
    assert boundary_band(t, kernel_size=5).sum().item() == 64


def test_boundary_band_wider_kernel_and_image_edge():
    t = torch.zeros(1, 1, 12, 12)
    t[..., :, :6] = 1.0  # left half: the only real boundary is the vertical line at column 6
    band = boundary_band(t, kernel_size=5)
    assert torch.equal(band[0, 0].sum(dim=0), torch.tensor([0, 0, 0, 0, 12, 12, 12, 12, 0, 0, 0, 0], dtype=torch.float))


@pytest.mark.parametrize("k", [1, 2, 4, 3.0])
def test_boundary_band_rejects_bad_kernel(k):
    with pytest.raises(ValueError, match="odd integer >= 3"):
        boundary_band(square(), kernel_size=k)


def test_tversky_on_known_band():
    t = square(8, 2, 6)
    # p = 0.5 on the 3x3 band: 12 target pixels (the 16 of the square minus the 2x2 erosion)
    # and 20 background pixels (the 6x6 dilation minus the square).
    tp, fp, fn = 0.5 * 12, 0.5 * 20, 0.5 * 12
    expected = 1 - (tp + 1) / (tp + 0.7 * fp + 0.3 * fn + 1)
    got = boundary_tversky_loss(torch.zeros_like(t), t, kernel_size=3)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_boundary_tversky_ignores_errors_outside_the_band():
    t = square(12, 4, 8)
    logits = confident(t)
    logits[..., 0, 0] = 30.0  # a false positive far from the boundary
    assert boundary_tversky_loss(logits, t, kernel_size=3).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(logits, t).item() > 0.01


def test_tversky_weights_false_positives_by_alpha():
    t = square(8, 2, 6)
    too_big, too_small = square(8, 1, 7), square(8, 3, 5)  # FP only (20 px) / FN only (12 px)
    fp_loss = tversky_loss(confident(too_big), t, alpha=0.7, beta=0.3).item()
    fn_loss = tversky_loss(confident(too_small), t, alpha=0.7, beta=0.3).item()
    assert fp_loss == pytest.approx(1 - 17 / (16 + 0.7 * 20 + 1), abs=1e-6)
    assert fn_loss == pytest.approx(1 - 5 / (4 + 0.3 * 12 + 1), abs=1e-6)
    # alpha = beta = 0.5 is the Dice loss (without smoothing, which the two scale differently).
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 8, 8)
    dice = dice_loss(logits, t, smooth=0.0).item()
    assert tversky_loss(logits, t, 0.5, 0.5, smooth=0.0).item() == pytest.approx(dice, abs=1e-6)


def test_boundary_tversky_empty_target_is_zero():
    t = torch.zeros(1, 1, 8, 8)
    assert boundary_tversky_loss(torch.randn(1, 1, 8, 8), t).item() == pytest.approx(0.0, abs=1e-6)


def test_delineation_loss_combines_the_parts():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    t = torch.cat([square(16, 4, 12), square(16, 2, 9)])
    loss_fn = DelineationLoss(alpha=1.0, beta=0.75, gamma=0.25, band_kernel=3)
    total, parts = loss_fn(logits, t)
    assert set(parts) == {"dice", "bce", "tversky"}
    assert all(not p.requires_grad for p in parts.values())
    assert total.item() == pytest.approx((parts["dice"] + 0.75 * parts["bce"] + 0.25 * parts["tversky"]).item(), abs=1e-6)
    assert parts["tversky"].item() == pytest.approx(boundary_tversky_loss(logits, t, kernel_size=3).item())
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    loss_fn.set_weights(1.0, 0.5, 0.0)
    total, parts = loss_fn(logits, t)
    assert total.item() == pytest.approx((parts["dice"] + 0.5 * parts["bce"]).item(), abs=1e-6)


def test_delineation_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        DelineationLoss(gamma=-0.1)
    with pytest.raises(ValueError, match="odd integer"):
        DelineationLoss(band_kernel=4)
    with pytest.raises(ValueError, match="same"):
        DelineationLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 4))
