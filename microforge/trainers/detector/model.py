"""``CrystalDetector``: an anchor-free, CenterNet-style oriented-box detector for slender rods.

A small encoder (conv-BN-ReLU stages, each halving the resolution) and a top-down path that
adds every coarser stage, upsampled, into the finer one (an FPN reduced to its sum) down to the
output stride (4 px). Five heads read that map, each a 3x3 conv, ReLU and a 1x1 conv:

* ``heatmap`` ``(B, 1, h, w)``: logits of "a rod's centre lies in this cell";
* ``size`` ``(B, 2, h, w)``: ``log(length), log(width)`` in pixels (L1 on logs = relative error);
* ``angle`` ``(B, 2, h, w)``: ``(cos 2θ, sin 2θ)``, continuous over a rod's 180-degree symmetry;
* ``offset`` ``(B, 2, h, w)``: the centre's sub-cell position, in cells;
* ``end_distance`` ``(B, 1, h, w)``: log px along the rod from the cell to the rod's end on the
  cell's side of its centre (decoding measures a long rod's length from two points part-way
  out, which see its ends; its centre cell sees neither).

Each image is standardised inside the network (zero mean, unit variance): DIC rods change the
gray level by a few percent of the background, whose brightness varies from image to image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

__all__ = ["DETECTOR_PRESETS", "HEADS", "CrystalDetector", "detector_from_preset"]

# Channels of each encoder stage (stage k has stride 2**(k + 1)); out_stride 4.
DETECTOR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"widths": [16, 24, 32, 48], "head_channels": 24},
    "small": {"widths": [24, 48, 96, 128], "head_channels": 48},
    "standard": {"widths": [32, 64, 128, 256], "head_channels": 64},
}
HEADS = {"heatmap": 1, "size": 2, "angle": 2, "offset": 2, "end_distance": 1}
OUT_STRIDE = 4
# Heatmap bias: sigmoid(-2.19) = 0.1, CenterNet's prior, so the focal loss starts near its minimum.
HEATMAP_PRIOR_BIAS = -2.19


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CrystalDetector(nn.Module):
    """Centre-heatmap oriented-box detector (see the module doc).

    Args:
        in_channels: image channels (1: gray).
        widths: channels of the encoder stages; stage k has stride ``2**(k + 1)``; at least 2.
        head_channels: channels of the fused stride-4 map and of each head's hidden layer.

    Shapes: ``(B, C, H, W)`` in, with H and W multiples of :attr:`size_multiple`; out a dict of
    ``(B, k, H/4, W/4)`` maps, keys :data:`HEADS`.

    Raises:
        ConfigError: fewer than 2 stages or a non-positive width.
    """

    def __init__(self, in_channels: int = 1, widths: list[int] | tuple[int, ...] = (16, 24, 32, 48),
                 head_channels: int = 24) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1 or head_channels < 1 or in_channels < 1:
            raise ConfigError(f"CrystalDetector needs >= 2 stage widths >= 1 and head_channels >= 1, got "
                              f"widths={widths}, head_channels={head_channels}")
        self.config = {"in_channels": int(in_channels), "widths": widths, "head_channels": int(head_channels)}
        self.size_multiple = 2 ** len(widths)
        stages, cin = [], in_channels
        for w in widths:
            stages.append(nn.Sequential(_conv(cin, w, 2), _conv(w, w)))
            cin = w
        self.stages = nn.ModuleList(stages)
        # Lateral 1x1 convs from stride 4 (stage 1) upwards into the fused width.
        self.laterals = nn.ModuleList(nn.Conv2d(w, head_channels, 1) for w in widths[1:])
        self.fuse = _conv(head_channels, head_channels)
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(head_channels, k, 1))
            for name, k in HEADS.items()})
        nn.init.constant_(self.heads["heatmap"][-1].bias, HEATMAP_PRIOR_BIAS)
        self.stride = OUT_STRIDE

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        x = (x - mean) / std
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        top = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[1:-1])):
            top = F.interpolate(top, size=feature.shape[-2:], mode="nearest") + lateral(feature)
        fused = self.fuse(top)
        return {name: head(fused) for name, head in self.heads.items()}


def detector_from_preset(preset: str = "tiny", **overrides: Any) -> CrystalDetector:
    """The detector of ``preset`` with constructor arguments replaced by ``overrides``.

    Raises:
        ConfigError: an unknown preset or argument (with a did-you-mean).
    """
    if preset not in DETECTOR_PRESETS:
        raise ConfigError(f"unknown detector preset '{preset}'{suggest(preset, list(DETECTOR_PRESETS))}; "
                          f"valid: {', '.join(DETECTOR_PRESETS)}")
    valid = ("in_channels", "widths", "head_channels")
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"CrystalDetector has no argument '{key}'{suggest(key, valid)}; valid: {', '.join(valid)}")
    return CrystalDetector(**{**DETECTOR_PRESETS[preset], **overrides})
