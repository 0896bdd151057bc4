"""The colorization workload's extra losses, in torch with gradients, and the scores built on them.

The original project computed these in numpy/OpenCV on detached tensors, so they trained nothing.
Here every piece is differentiable:

* ``gt``: a soft threshold of the output's luminance (dark = nucleus, as hematoxylin stains nuclei
  dark) against the binary mask, as ``1 - soft Dice``; the hard version is the ``dice`` score.
* ``colorvar``: ``1 - (SSIM(gray(output), reference) + 1) / 2`` (Gaussian-window SSIM of Wang et
  al., 11 px, sigma 1.5, on [0, 1] images; the same numbers as ``skimage.metrics.structural_similarity``
  with ``gaussian_weights=True, use_sample_covariance=False``).
* ``hsv``: ``1 - correlation`` of joint HSV histograms built by kernel density (every pixel adds
  soft weights to every bin, so the histogram has a gradient); hue bins are circular (a von Mises
  kernel), so red at 359 degrees is next to red at 1 degree. Correlation is OpenCV's
  ``HISTCMP_CORREL`` (Pearson over bins).

Images are ``(B, C, H, W)``: model outputs in [-1, 1] are mapped with :func:`to_unit` first.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

__all__ = ["DEFAULT_LOSS_WEIGHTS", "HSV_BINS", "LOSS_NAMES", "colorvar_loss", "dice_score", "gaussian_window",
           "gt_loss", "histogram_correlation", "hsv_histogram", "hsv_loss", "luminance", "parse_loss_weights",
           "rgb_to_hsv", "soft_cell_mask", "ssim", "to_unit"]

LOSS_NAMES = ("gt", "colorvar", "hsv")
DEFAULT_LOSS_WEIGHTS = {"gt": 5.0, "colorvar": 5.0, "hsv": 10.0}  # the original project's
HSV_BINS = (16, 8, 8)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, OpenCV's RGB2GRAY


def parse_loss_weights(text: str | Mapping[str, float]) -> dict[str, float]:
    """The weights named in ``"gt=5,colorvar=5,hsv=10"`` (or a mapping); names left out are absent.

    Raises:
        ConfigError: an unknown name (with a did-you-mean), a malformed item or a negative weight.
    """
    items: dict[str, object] = dict(text) if isinstance(text, Mapping) else {}
    if isinstance(text, str):
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"loss weight '{part}' must be NAME=WEIGHT, e.g. gt=5,colorvar=5,hsv=10")
            items[name.strip()] = value.strip()
    weights = {}
    for name, value in items.items():
        if name not in LOSS_NAMES:
            raise ConfigError(f"unknown loss weight '{name}'{suggest(name, LOSS_NAMES)}; valid: {', '.join(LOSS_NAMES)}")
        try:
            weight = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"loss weight {name}={value}: the weight is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"loss weight {name}={value} must be a finite number >= 0")
        weights[name] = weight
    return weights


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return (x + 1.0) / 2.0


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)``; a 1-channel image is returned as it is."""
    if rgb.shape[1] == 1:
        return rgb
    weights = rgb.new_tensor(LUMA).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def rgb_to_hsv(rgb: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, 3, H, W)`` in [0, 1] -> hue in radians [0, 2 pi), saturation and value in [0, 1], each
    ``(B, H, W)``. Grey pixels get hue 0 (as OpenCV) and a zero, not NaN, hue gradient."""
    r, g, b = rgb.unbind(dim=1)
    value, arg = rgb.max(dim=1)
    delta = value - rgb.min(dim=1).values
    chroma = delta > eps
    safe = torch.where(chroma, delta, torch.ones_like(delta))  # no 0/0 in either branch's gradient
    sector = torch.where(arg == 0, torch.remainder((g - b) / safe, 6.0),
                         torch.where(arg == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(chroma, sector * (math.pi / 3.0), torch.zeros_like(sector))
    saturation = torch.where(value > eps, delta / torch.where(value > eps, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return hue, saturation, value


def gaussian_window(size: int = 11, sigma: float = 1.5, *, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image of 1-channel ``(B, 1, H, W)`` images over the window's valid positions.

    Raises:
        ValueError: shapes that differ, more than one channel, or sides below the window.
    """
    if x.shape != y.shape or x.shape[1] != 1:
        raise ValueError(f"ssim takes two (B, 1, H, W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window} x {window} px, got {tuple(x.shape[-2:])}")
    w = gaussian_window(window, sigma, device=x.device, dtype=x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x ** 2
    var_y = F.conv2d(y * y, w) - mu_y ** 2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def soft_cell_mask(rgb: torch.Tensor, threshold: float = 0.5, temperature: float = 0.05) -> torch.Tensor:
    """``(B, 1, H, W)`` in (0, 1): how surely each pixel of a [0, 1] image is darker than ``threshold``
    (a nucleus); ``temperature`` -> 0 gives the hard threshold of :func:`dice_score`."""
    return torch.sigmoid((threshold - luminance(rgb)) / temperature)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return values.mean()
    valid = valid.to(values.dtype).reshape(-1)
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


def gt_loss(image: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None, *,
            threshold: float = 0.5, temperature: float = 0.05) -> torch.Tensor:
    """``1 - soft Dice`` of :func:`soft_cell_mask` of ``image`` ([-1, 1]) against ``mask`` ({0, 1},
    ``(B, 1, H, W)``); ``valid`` ``(B,)`` selects the samples that have a mask."""
    soft = soft_cell_mask(to_unit(image), threshold, temperature).flatten(1)
    target = mask.to(soft.dtype).flatten(1)
    dice = (2 * (soft * target).sum(1) + 1.0) / (soft.sum(1) + target.sum(1) + 1.0)
    return _masked_mean(1.0 - dice, valid)


def colorvar_loss(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``1 - (SSIM(gray(image), gray(reference)) + 1) / 2``, both in [-1, 1], averaged over the batch."""
    return (1.0 - (ssim(luminance(to_unit(image)), luminance(to_unit(reference))) + 1.0) / 2.0).mean()


def hsv_histogram(rgb: torch.Tensor, bins: tuple[int, int, int] = HSV_BINS) -> torch.Tensor:
    """Joint HSV histograms ``(B, h * s * v)`` (each sums to 1) of ``(B, 3, H, W)`` images in [0, 1]
    by kernel density: each pixel spreads a unit weight over the bins of each channel (Gaussian for
    S and V, von Mises for the circular hue, bandwidth one bin)."""
    hue, sat, val = (c.flatten(1) for c in rgb_to_hsv(rgb))
    n_h, n_s, n_v = bins
    centres = (torch.arange(n_h, device=rgb.device, dtype=rgb.dtype) + 0.5) * (2 * math.pi / n_h)
    kappa = 1.0 / (2 * math.pi / n_h) ** 2
    w_h = torch.exp(kappa * (torch.cos(hue[..., None] - centres) - 1.0))

    def linear(x: torch.Tensor, n: int) -> torch.Tensor:
        c = (torch.arange(n, device=x.device, dtype=x.dtype) + 0.5) / n
        return torch.exp(-0.5 * ((x[..., None] - c) * n) ** 2)

    w_h, w_s, w_v = (w / w.sum(-1, keepdim=True) for w in (w_h, linear(sat, n_s), linear(val, n_v)))
    joint = torch.einsum("bph,bps,bpv->bhsv", w_h, w_s, w_v).flatten(1)
    return joint / hue.shape[1]


def histogram_correlation(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over bins (OpenCV ``HISTCMP_CORREL``) of ``(B, K)`` and ``(B or 1, K)``."""
    a, b = h1 - h1.mean(-1, keepdim=True), h2 - h2.mean(-1, keepdim=True)
    return (a * b).sum(-1) / ((a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt() + 1e-12)


def hsv_loss(image: torch.Tensor, target: torch.Tensor, bins: tuple[int, int, int] = HSV_BINS) -> torch.Tensor:
    """``1 - correlation`` of each image's HSV histogram with the batch-mean histogram of ``target``
    (unpaired B images, so their pooled colours, not one partner's), both in [-1, 1]."""
    reference = hsv_histogram(to_unit(target.detach()), bins).mean(0, keepdim=True)
    return (1.0 - histogram_correlation(hsv_histogram(to_unit(image), bins), reference)).mean()


def dice_score(image: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice ``(B,)`` of the hard nucleus mask (luminance of [-1, 1] ``image`` below
    ``threshold``) against ``mask``; 1 when both are empty."""
    pred = (luminance(to_unit(image)) < threshold).flatten(1).float()
    target = (mask > 0.5).flatten(1).float()
    denominator = pred.sum(1) + target.sum(1)
    return torch.where(denominator > 0, 2 * (pred * target).sum(1) / denominator.clamp_min(1),
                       torch.ones_like(denominator))
