"""FastGAN building blocks (Liu et al., ICLR 2021; the reference code's ``models.py``).

Every convolution is spectral-normed (``torch.nn.utils.parametrizations.spectral_norm``: the
parametrized form survives ``copy.deepcopy``, which a generator EMA needs; the reference's hook
form does not after a forward pass). Parameter counts are the reference's: the normalised weight
is stored once, as ``parametrizations.weight.original``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "D_MULTIPLIERS",
    "DownBlock",
    "DownBlockComp",
    "G_MULTIPLIERS",
    "NoiseInjection",
    "SEBlock",
    "SimpleDecoder",
    "Swish",
    "UpBlock",
    "UpBlockComp",
    "conv2d",
    "conv_transpose2d",
    "init_layer",
    "channel_table",
]

# Channel multipliers of the reference: generator (and the decoders, on a width of 32) and
# discriminator, indexed by the feature map's side in pixels.
G_MULTIPLIERS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
D_MULTIPLIERS = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
DECODER_WIDTH = 32


def channel_table(width: int, multipliers: dict[int, float]) -> dict[int, int]:
    """``{side: int(multiplier * width)}``, truncated as the reference does."""
    return {side: int(mult * width) for side, mult in multipliers.items()}


def conv2d(*args, **kwargs) -> nn.Module:
    """A spectral-normed ``nn.Conv2d`` (no bias unless asked, as everywhere in the reference)."""
    kwargs.setdefault("bias", False)
    return spectral_norm(nn.Conv2d(*args, **kwargs))


def conv_transpose2d(*args, **kwargs) -> nn.Module:
    kwargs.setdefault("bias", False)
    return spectral_norm(nn.ConvTranspose2d(*args, **kwargs))


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class NoiseInjection(nn.Module):
    """``feat + weight * noise`` with one learned scalar, initialised to 0 (a no-op at init).

    ``noise`` is ``(B, 1, H, W)``; when not given it is drawn with ``torch.randn`` on the
    feature's device.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, feat: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = feat.shape
            noise = torch.randn(b, 1, h, w, device=feat.device, dtype=feat.dtype)
        return feat + self.weight * noise.to(feat.dtype)


class SEBlock(nn.Module):
    """Skip-layer excitation: ``big * sigmoid(conv1x1(swish(conv4x4(avgpool4(small)))))``."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            conv2d(ch_in, ch_out, 4, 1, 0),
            Swish(),
            conv2d(ch_out, ch_out, 1, 1, 0),
            nn.Sigmoid(),
        )

    def forward(self, feat_small: torch.Tensor, feat_big: torch.Tensor) -> torch.Tensor:
        return feat_big * self.main(feat_small)


def init_layer(nz: int, channel: int) -> nn.Sequential:
    """``(B, nz, 1, 1) -> (B, channel, 4, 4)``: ConvTranspose 4x4 to ``2 * channel``, BN, GLU."""
    return nn.Sequential(conv_transpose2d(nz, channel * 2, 4, 1, 0), nn.BatchNorm2d(channel * 2), nn.GLU(dim=1))


class UpBlock(nn.Sequential):
    """Nearest x2 -> conv3x3 to ``2 * out`` -> BN -> GLU."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv2d(in_planes, out_planes * 2, 3, 1, 1),
            nn.BatchNorm2d(out_planes * 2),
            nn.GLU(dim=1),
        )


class UpBlockComp(nn.Module):
    """The up-block twice over, with noise injection after each conv (as the reference)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = conv2d(in_planes, out_planes * 2, 3, 1, 1)
        self.noise1 = NoiseInjection()
        self.bn1 = nn.BatchNorm2d(out_planes * 2)
        self.conv2 = conv2d(out_planes, out_planes * 2, 3, 1, 1)
        self.noise2 = NoiseInjection()
        self.bn2 = nn.BatchNorm2d(out_planes * 2)

    def forward(self, x: torch.Tensor,
                noise: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)) -> torch.Tensor:
        x = F.glu(self.bn1(self.noise1(self.conv1(self.up(x)), noise[0])), dim=1)
        return F.glu(self.bn2(self.noise2(self.conv2(x), noise[1])), dim=1)


class DownBlock(nn.Sequential):
    """conv4x4 stride 2 -> BN -> LeakyReLU(0.2)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(conv2d(in_planes, out_planes, 4, 2, 1), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2))


class DownBlockComp(nn.Module):
    """Average of (conv4 s2 + BN + LReLU + conv3 + BN + LReLU) and (avgpool2 + conv1 + BN + LReLU)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv2d(in_planes, out_planes, 4, 2, 1), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2),
            conv2d(out_planes, out_planes, 3, 1, 1), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2, 2), conv2d(in_planes, out_planes, 1, 1, 0), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return (self.main(feat) + self.direct(feat)) / 2


class SimpleDecoder(nn.Module):
    """AdaptiveAvgPool(8) -> 4 GLU up-blocks -> conv3x3 to ``nc`` -> tanh: a ``(B, nc, 128, 128)`` image.

    Its widths come from the generator table on a fixed width of 32, whatever ``ndf`` is (as in
    the reference), so the three decoders are a near-constant ~1 M parameters.
    """

    def __init__(self, nfc_in: int, nc: int) -> None:
        super().__init__()
        nfc = channel_table(DECODER_WIDTH, G_MULTIPLIERS)
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(8),
            UpBlock(nfc_in, nfc[16]),
            UpBlock(nfc[16], nfc[32]),
            UpBlock(nfc[32], nfc[64]),
            UpBlock(nfc[64], nfc[128]),
            conv2d(nfc[128], nc, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.main(feat)
