"""Segmentation losses on logits: soft Dice, BCE, boundary Tversky, and their weighted sum.

All losses take raw logits and a float target mask in {0, 1} of the same shape
``(B, C, H, W)``, reduce per image and channel over ``(H, W)``, then average over ``B`` and
``C``. Nothing here imports Ray.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DelineationLoss",
    "boundary_band",
    "boundary_tversky_loss",
    "dice_loss",
    "tversky_loss",
]


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape != target.shape:
        raise ValueError(
            f"expected logits and target of the same (B, C, H, W) shape, "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2|p t| + s) / (|p| + |t| + s)`` on ``p = sigmoid(logits)``.

    Args:
        logits: ``(B, C, H, W)`` raw scores.
        target: ``(B, C, H, W)`` mask in {0, 1}.
        smooth: added to numerator and denominator; keeps an empty-vs-empty image at loss 0.

    Returns:
        Scalar tensor, the mean over ``B`` and ``C`` of the per-image loss, in [0, 1].

    Raises:
        ValueError: the shapes differ or are not 4-D.
    """
    _check_pair(logits, target)
    p = torch.sigmoid(logits.float())
    t = target.float()
    inter = (p * t).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + t.sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.7,
    beta: float = 0.3,
    smooth: float = 1.0,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Tversky loss ``1 - (TP + s) / (TP + alpha FP + beta FN + s)`` on ``p = sigmoid(logits)``.

    ``alpha`` weighs false positives and ``beta`` false negatives (Salehi 2017; MONAI's
    convention). ``alpha = beta = 0.5`` is the soft Dice loss.

    Args:
        logits: ``(B, C, H, W)`` raw scores.
        target: ``(B, C, H, W)`` mask in {0, 1}.
        alpha: weight of the soft false positives ``sum p (1 - t)``.
        beta: weight of the soft false negatives ``sum (1 - p) t``.
        smooth: added to numerator and denominator (an empty region gives loss 0).
        region: optional ``(B, C, H, W)`` weights in [0, 1]; only pixels inside count.

    Returns:
        Scalar tensor, mean over ``B`` and ``C``.

    Raises:
        ValueError: the shapes differ or are not 4-D.
    """
    _check_pair(logits, target)
    p = torch.sigmoid(logits.float())
    t = target.float()
    w = torch.ones_like(p) if region is None else region.float()
    tp = (w * p * t).sum(dim=(2, 3))
    fp = (w * p * (1.0 - t)).sum(dim=(2, 3))
    fn = (w * (1.0 - p) * t).sum(dim=(2, 3))
    return (1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean()


def _check_band_kernel(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"boundary band kernel_size must be an odd integer >= 3, got {kernel_size!r}")


def boundary_band(target: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Band around the mask boundary: ``dilate(t) - erode(t)`` with a square ``k x k`` kernel.

    Morphology is a max-pool on the tensor (erosion is ``1 - maxpool(1 - t)``), so it runs on
    the target's device. With ``k = 2r + 1`` the band holds every pixel within ``r`` pixels
    (chessboard distance) of the boundary, on both sides, and is ``2r`` pixels thick. Beyond
    the image edge counts as "same as the nearest pixel": an object touching the edge has no
    band along it.

    Args:
        target: ``(B, C, H, W)`` mask in {0, 1}.
        kernel_size: odd side ``k`` of the structuring element, >= 3.

    Returns:
        ``(B, C, H, W)`` float tensor in {0, 1}.

    Raises:
        ValueError: ``kernel_size`` is even or below 3.
    """
    _check_band_kernel(kernel_size)
    t = target.float()
    pad = kernel_size // 2
    # max_pool2d pads with -inf, i.e. the outside never wins the max: edge-replicate behaviour.
    dilated = F.max_pool2d(t, kernel_size, stride=1, padding=pad)
    eroded = 1.0 - F.max_pool2d(1.0 - t, kernel_size, stride=1, padding=pad)
    return dilated - eroded


def boundary_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kernel_size: int = 5,
    alpha: float = 0.7,
    beta: float = 0.3,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Tversky loss restricted to :func:`boundary_band` of the target (shapes as there).

    An image whose target has no boundary (empty or full) contributes loss 0.
    """
    _check_pair(logits, target)
    band = boundary_band(target, kernel_size)
    return tversky_loss(logits, target, alpha=alpha, beta=beta, smooth=smooth, region=band)


class DelineationLoss(nn.Module):
    """``alpha * Dice + beta * BCE-with-logits + gamma * boundary Tversky``.

    The weights are plain attributes so a trainer can update them each epoch, e.g. from
    :func:`microforge.trainers.schedules.loss_weights` via :meth:`set_weights`.

    Args:
        alpha: weight of :func:`dice_loss`.
        beta: weight of the mean binary cross-entropy with logits.
        gamma: weight of :func:`boundary_tversky_loss`.
        band_kernel: odd side of the boundary-band kernel (see :func:`boundary_band`).
        tversky_alpha: Tversky weight of false positives.
        tversky_beta: Tversky weight of false negatives.
        smooth: smoothing term of the Dice and Tversky ratios.

    Shapes:
        ``logits, target: (B, C, H, W)``; returns ``(total, parts)`` where ``total`` is a scalar
        tensor with gradient and ``parts`` maps ``"dice"``, ``"bce"``, ``"tversky"`` to detached
        unweighted scalar tensors for logging.

    Raises:
        ValueError: shapes differ or are not 4-D; a weight is negative.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.0,
        band_kernel: int = 5,
        tversky_alpha: float = 0.7,
        tversky_beta: float = 0.3,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        _check_band_kernel(band_kernel)
        self.band_kernel = band_kernel
        self.tversky_alpha = tversky_alpha
        self.tversky_beta = tversky_beta
        self.smooth = smooth
        self.set_weights(alpha, beta, gamma)

    def set_weights(self, alpha: float, beta: float, gamma: float) -> None:
        """Replace the three term weights (each >= 0)."""
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"DelineationLoss.{name} must be >= 0, got {value}")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dice = dice_loss(logits, target, smooth=self.smooth)
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        tversky = boundary_tversky_loss(
            logits,
            target,
            kernel_size=self.band_kernel,
            alpha=self.tversky_alpha,
            beta=self.tversky_beta,
            smooth=self.smooth,
        )
        total = self.alpha * dice + self.beta * bce + self.gamma * tversky
        return total, {"dice": dice.detach(), "bce": bce.detach(), "tversky": tversky.detach()}
