"""Attention U-Net for binary delineation: CBAM encoder, blur-pool downsampling, gated skips.

The network follows the U-Net layout (Ronneberger 2015) with three additions:

* CBAM (Woo 2018) on every encoder stage: channel attention from a shared MLP over the
  average- and max-pooled features, then spatial attention from a 7x7 conv over the
  channel-wise average and max maps.
* Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant
  Again"): max-pool with stride 1, then a fixed depthwise binomial [1, 2, 1] blur with stride 2.
* Additive attention gates on the skip connections (Oktay 2018): the up-sampled decoder
  feature gates the encoder feature it is concatenated with.

The constructor takes only JSON-serialisable arguments and exposes them as ``.config``, so an
artifact stores ``model.config`` next to the weights and ``AttentionUNet(**config)`` rebuilds it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "BlurPool2d",
    "CBAM",
    "UNET_PRESETS",
    "unet_from_preset",
]

# Hidden width of the CBAM channel MLP is channels // 16, as in the CBAM paper.
CBAM_REDUCTION = 16


class ConvBlock(nn.Sequential):
    """(conv3x3 - BatchNorm - ReLU) x 2: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        # No conv bias: the BatchNorm that follows has its own shift.
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018), shape preserving.

    Channel attention ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one MLP shared by both
    pools, then spatial attention ``sigmoid(conv7x7([mean_c(x), max_c(x)]))``.

    Args:
        channels: number of feature channels ``C``.
        reduction: the MLP's hidden width is ``max(1, C // reduction)``.
        spatial_kernel: side of the spatial-attention convolution (odd).

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = CBAM_REDUCTION, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, 1, 1)`` weights in (0, 1)."""
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)

    def spatial_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)`` weights in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_weights(x)
        return x * self.spatial_weights(x)


class BlurPool2d(nn.Module):
    """Anti-aliased 2x downsampling: max-pool stride 1, then a binomial blur with stride 2.

    The blur is the fixed, depthwise, normalised outer product of ``[1, 2, 1]`` (a buffer, not a
    parameter), applied with reflect padding, as in Zhang 2019 ("MaxBlurPool").

    Args:
        channels: number of feature channels ``C`` (the blur is depthwise).

    Shapes:
        ``(B, C, H, W) -> (B, C, H // 2, W // 2)`` for even ``H`` and ``W``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps)
        kernel = kernel / kernel.sum()
        self.channels = channels
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pad right/bottom by one so the stride-1 max-pool keeps H x W (dense max before blur).
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), kernel_size=2, stride=1)
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018).

    ``alpha = sigmoid(BN(psi(ReLU(BN(W_g g) + BN(W_x x)))))`` and the output is ``x * alpha``.
    The gating signal ``g`` is the decoder feature after its transposed convolution, so it is
    already at the resolution of the skip ``x``.

    Args:
        gate_channels: channels of the gating signal ``g``.
        skip_channels: channels of the skip feature ``x``.
        inter_channels: channels of the intermediate sum (default ``skip_channels // 2``).

    Shapes:
        ``g: (B, C_g, H, W)``, ``x: (B, C_x, H, W) -> (B, C_x, H, W)``;
        :meth:`coefficients` gives ``alpha`` as ``(B, 1, H, W)``.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Sigmoid())

    def coefficients(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``alpha`` in (0, 1), shape ``(B, 1, H, W)``."""
        return self.psi(F.relu(self.w_g(g) + self.w_x(x)))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(g, x)


class EncoderStage(nn.Module):
    """Conv block then optional CBAM: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, cbam: bool) -> None:
        super().__init__()
        self.conv = ConvBlock(in_channels, out_channels)
        self.cbam = CBAM(out_channels) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(self.conv(x))


class DecoderStage(nn.Module):
    """Transposed-conv upsampling, gated skip, concat, conv block, dropout.

    Shapes:
        ``x: (B, C_in, H, W)``, ``skip: (B, C_in // 2, 2H, 2W) -> (B, C_in // 2, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, attention_gate: bool, dropout: float) -> None:
        super().__init__()
        out_channels = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.gate = AttentionGate(out_channels, out_channels) if attention_gate else None
        self.conv = ConvBlock(2 * out_channels, out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.gate is not None:
            skip = self.gate(x, skip)
        return self.dropout(self.conv(torch.cat([skip, x], dim=1)))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"AttentionUNet.{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"AttentionUNet.{name}: expected true or false, got {value!r}")
    return value


class AttentionUNet(nn.Module):
    """Attention U-Net with CBAM encoder stages and blur-pool downsampling; outputs logits.

    ``depth`` levels with ``base_channels * 2**i`` filters at level ``i`` (the reference,
    ``depth=5, base_channels=64``, goes 64 -> 1024 filters and has 31.55M parameters). The
    deepest level is the bottleneck; there are ``depth - 1`` downsamplings, so the input's
    ``H`` and ``W`` must be divisible by ``2**(depth - 1)``.

    Args:
        in_channels: image channels (1 for grey-level microscopy).
        out_channels: output logit channels (1 for a binary mask).
        depth: number of resolution levels, >= 2.
        base_channels: filters at the first level, doubled at each level down.
        dropout: ``Dropout2d`` probability after the bottleneck and each decoder stage; 0 disables.
        attention_gates: gate the skip connections with additive attention.
        cbam: apply CBAM to every encoder stage (bottleneck included).
        blur_pool: anti-aliased MaxBlurPool downsampling; ``False`` uses a plain 2x2 max-pool.

    Shapes:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` logits (apply a sigmoid for
        probabilities).

    Raises:
        ConfigError: an argument is out of range or of the wrong type; at ``forward``, an input
            that is not 4-D, has the wrong channel count, or an ``H``/``W`` not divisible by
            ``2**(depth - 1)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 5,
        base_channels: int = 64,
        dropout: float = 0.1,
        attention_gates: bool = True,
        cbam: bool = True,
        blur_pool: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"AttentionUNet.dropout: expected a number in [0, 1), got {dropout!r}")
        self.config: dict[str, Any] = {
            "in_channels": _check_int("in_channels", in_channels, 1),
            "out_channels": _check_int("out_channels", out_channels, 1),
            "depth": _check_int("depth", depth, 2),
            "base_channels": _check_int("base_channels", base_channels, 1),
            "dropout": float(dropout),
            "attention_gates": _check_bool("attention_gates", attention_gates),
            "cbam": _check_bool("cbam", cbam),
            "blur_pool": _check_bool("blur_pool", blur_pool),
        }
        widths = [base_channels * 2**i for i in range(depth)]
        self.encoder = nn.ModuleList(
            EncoderStage(c_in, c_out, cbam) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.downsample = nn.ModuleList(
            BlurPool2d(c) if blur_pool else nn.MaxPool2d(2) for c in widths[:-1]
        )
        self.bottleneck_dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList(DecoderStage(c, attention_gates, dropout) for c in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def size_multiple(self) -> int:
        """``H`` and ``W`` of an input must be multiples of this (``2**(depth - 1)``)."""
        return 2 ** (self.config["depth"] - 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ConfigError` unless ``x`` is ``(B, in_channels, H, W)`` with valid ``H, W``."""
        if x.ndim != 4:
            raise ConfigError(f"AttentionUNet expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config["in_channels"]:
            raise ConfigError(
                f"AttentionUNet was built for {self.config['in_channels']} input channel(s), "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        m = self.size_multiple
        h, w = x.shape[-2:]
        if h % m or w % m:
            fit_h, fit_w = -(-h // m) * m, -(-w // m) * m
            raise ConfigError(
                f"AttentionUNet(depth={self.config['depth']}) needs H and W divisible by {m}, "
                f"got {h}x{w}; pad or resize the input to e.g. {fit_h}x{fit_w}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for stage, down in zip(self.encoder[:-1], self.downsample):
            x = stage(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck_dropout(self.encoder[-1](x))
        for stage, skip in zip(self.decoder, reversed(skips)):
            x = stage(x, skip)
        return self.head(x)


# Named sizes; `standard` is the reference network (31.55M parameters).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"depth": 4, "base_channels": 8},
    "small": {"depth": 5, "base_channels": 16},
    "standard": {"depth": 5, "base_channels": 64},
}


def unet_from_preset(name: str, **overrides: Any) -> AttentionUNet:
    """Build an :class:`AttentionUNet` from a preset in :data:`UNET_PRESETS`.

    Args:
        name: ``"tiny"``, ``"small"`` or ``"standard"``.
        **overrides: constructor arguments that replace the preset's values.

    Raises:
        ConfigError: unknown preset or override name (with a did-you-mean), or a bad value.
    """
    if name not in UNET_PRESETS:
        raise ConfigError(
            f"unknown U-Net preset '{name}'{suggest(name, list(UNET_PRESETS))}; "
            f"valid presets: {', '.join(UNET_PRESETS)}"
        )
    valid = list(inspect.signature(AttentionUNet).parameters)
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"unknown U-Net argument '{key}'{suggest(key, valid)}; valid: {', '.join(valid)}")
    return AttentionUNet(**{**UNET_PRESETS[name], **overrides})
