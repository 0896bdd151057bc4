"""Differentiable augmentation (Zhao et al., NeurIPS 2020; mit-han-lab ``DiffAugment_pytorch.py``).

Applied to real and fake images alike before the discriminator. Policies, comma-separated:

* ``color``: brightness + U(-0.5, 0.5), saturation x U(0, 2) (a no-op on one channel), contrast
  x U(0.5, 1.5), per sample.
* ``translation``: a shift of up to 1/8 of the image per axis and per sample. ``pad_mode="reflect"``
  (default) fills the uncovered border by mirroring the image, which suits microscopy; ``"zeros"``
  is the reference (0, i.e. mid-grey for images in [-1, 1]).
* ``cutout``: a square of half the image side set to 0, at a random centre per sample (the
  reference's exact draw and clamping).

Randomness comes only from ``torch.rand`` / ``torch.randint`` on ``x``'s device, drawn in the
reference's order: seed the caller's RNG for a repeatable augmentation.
"""

from __future__ import annotations

import torch

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

__all__ = ["POLICIES", "PAD_MODES", "diff_augment", "parse_policy"]

POLICIES = ("color", "translation", "cutout")
PAD_MODES = ("reflect", "zeros")


def parse_policy(policy: str) -> list[str]:
    """``"translation,cutout"`` -> ``["translation", "cutout"]``; ``""`` -> ``[]``.

    Raises:
        ConfigError: an unknown policy name (with a did-you-mean).
    """
    names = [name.strip() for name in policy.split(",") if name.strip()]
    for name in names:
        if name not in POLICIES:
            raise ConfigError(f"unknown DiffAugment policy {name!r}{suggest(name, POLICIES)}; "
                              f"choose from {', '.join(POLICIES)}")
    return names


def _rand(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_rand(x) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x) * 2) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125, pad_mode: str = "reflect") -> torch.Tensor:
    b, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    t_h = torch.randint(-shift_h, shift_h + 1, size=[b, 1, 1], device=dev)
    t_w = torch.randint(-shift_w, shift_w + 1, size=[b, 1, 1], device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1) + t_h  # (b, h, 1): source row of each output row
    cols = torch.arange(w, device=dev).view(1, 1, w) + t_w  # (b, 1, w)
    if pad_mode == "reflect":
        # Mirror without repeating the edge (numpy "reflect"); one fold suffices for |shift| < side.
        rows = (h - 1) - ((h - 1) - rows.abs()).abs()
        cols = (w - 1) - ((w - 1) - cols.abs()).abs()
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (b, 1, h, w)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    out = x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if inside is not None:
        out = torch.where(inside, out, out.new_zeros(()))
    return out.contiguous()


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    off_h = torch.randint(0, h + (1 - size_h % 2), size=[b, 1, 1], device=dev)
    off_w = torch.randint(0, w + (1 - size_w % 2), size=[b, 1, 1], device=dev)
    rows = (torch.arange(size_h, device=dev).view(1, size_h, 1) + off_h - size_h // 2).clamp(0, h - 1)
    cols = (torch.arange(size_w, device=dev).view(1, 1, size_w) + off_w - size_w // 2).clamp(0, w - 1)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=dev)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


def diff_augment(x: torch.Tensor, policy: str = "translation,cutout", *, pad_mode: str = "reflect") -> torch.Tensor:
    """Augment a ``(B, C, H, W)`` batch differentiably with the comma-separated ``policy``.

    Raises:
        ConfigError: an unknown policy or pad mode.
    """
    names = parse_policy(policy)
    if pad_mode not in PAD_MODES:
        raise ConfigError(f"unknown translation pad mode {pad_mode!r}{suggest(pad_mode, PAD_MODES)}; "
                          f"choose from {', '.join(PAD_MODES)}")
    for name in names:
        if name == "color":
            x = rand_contrast(rand_saturation(rand_brightness(x)))
        elif name == "translation":
            x = rand_translation(x, pad_mode=pad_mode)
        else:
            x = rand_cutout(x)
    return x.contiguous()
