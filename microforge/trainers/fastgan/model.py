"""FastGAN generator and discriminator (Liu et al., ICLR 2021), after the reference ``models.py``.

Generator: ``z (B, nz)`` -> 4x4 (ConvTranspose + BN + GLU) -> up-blocks to the full size, "comp"
blocks (two convs with noise injection) at 8, 32, 128 and 512 px, skip-layer excitation 4->64,
8->128, 16->256 and 32->512; images at full size and at 128 px, both through ``tanh`` (the
reference forgets ``tanh`` at 256 and 512 px).

Discriminator: the full image down to 256 px features, five averaged down-blocks to 8x8 with
SLEs 2->16, 4->32, 8->64 (named by the reference's feature index), a second branch on a 128 px
copy, patch logits from both, and three decoders used on real images only: the 8x8 map, the
small branch and one quarter (``part``) of the 16x16 map, each reconstructing a 128 px image.

Constructors take only JSON-serialisable arguments and expose them as ``.config``, so
``Generator(**g.config)`` rebuilds ``g`` from an artifact.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

from .blocks import (
    D_MULTIPLIERS,
    G_MULTIPLIERS,
    DownBlock,
    DownBlockComp,
    SEBlock,
    SimpleDecoder,
    UpBlock,
    UpBlockComp,
    channel_table,
    conv2d,
    init_layer,
)

__all__ = [
    "Discriminator",
    "FASTGAN_SIZES",
    "Generator",
    "RESOLUTIONS",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "crop_part",
    "reconstruction_targets",
    "weights_init",
]

# Named sizes of the original CARS trainer mapped onto ngf = ndf.
FASTGAN_SIZES = {"micro": 32, "small": 48, "standard": 64, "large": 96, "xlarge": 128}
RESOLUTIONS = (256, 512, 1024)
CHANNELS = (1, 3)
SMALL_SIZE = 128  # the second output of G, the second input of D, the decoders' output
EVAL_NOISE_MODES = ("latent", "random", "none")


def _check_resolution(im_size: int) -> None:
    if im_size not in RESOLUTIONS:
        raise ConfigError(f"FastGAN resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {im_size}")


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise ConfigError(f"FastGAN {name} must be an integer >= 8, got {value!r}")


def _check_channels(nc: int) -> None:
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"FastGAN image channels must be a positive integer, got {nc!r}")


def weights_init(module: nn.Module) -> None:
    """The reference init, for ``module.apply``: conv weights N(0, 0.02), BatchNorm N(1, 0.02) / 0.

    For a spectral-normed conv the stored weight (``parametrizations.weight.original``) is drawn
    and the power iteration's vectors are refreshed for it, so sigma is right at step 0.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        with torch.no_grad():
            parametrizations = getattr(module, "parametrizations", None)
            if parametrizations is not None and "weight" in parametrizations:
                weight = parametrizations.weight.original
                weight.normal_(0.0, 0.02)
                for fn in parametrizations.weight:
                    if hasattr(fn, "_power_method") and hasattr(fn, "_reshape_weight_to_matrix"):
                        fn._power_method(fn._reshape_weight_to_matrix(weight), 15)
            else:
                module.weight.normal_(0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        with torch.no_grad():
            module.weight.normal_(1.0, 0.02)
            module.bias.zero_()


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (spectral-normed weights counted once)."""
    return sum(p.numel() for p in module.parameters())


class Generator(nn.Module):
    """FastGAN generator.

    ``forward(z)`` returns the full-size image ``(B, nc, im_size, im_size)`` only, so
    :func:`microforge.trainers.predict.generate_images` can call it; ``forward(z,
    return_small=True)`` returns ``[full, small]`` with ``small`` ``(B, nc, 128, 128)``, which the
    discriminator takes as its input list. Both are in [-1, 1].

    Noise injection: in training mode the noise is ``torch.randn`` (the reference). In eval mode
    ``eval_noise`` decides: ``"latent"`` (default) draws each sample's noise from a CPU
    ``torch.Generator`` seeded from the bytes of its ``z``, so an image is a pure function of its
    latent whatever the batch or device; ``"random"`` keeps ``torch.randn``; ``"none"`` drops it.
    """

    def __init__(self, ngf: int = 64, nz: int = 256, nc: int = 1, im_size: int = 256) -> None:
        super().__init__()
        _check_width("ngf", ngf)
        _check_channels(nc)
        _check_resolution(im_size)
        if isinstance(nz, bool) or not isinstance(nz, int) or nz < 1:
            raise ConfigError(f"FastGAN nz must be a positive integer, got {nz!r}")
        self.config = {"ngf": ngf, "nz": nz, "nc": nc, "im_size": im_size}
        self.nz, self.nc, self.im_size = nz, nc, im_size
        self.eval_noise = "latent"
        nfc = channel_table(ngf, G_MULTIPLIERS)

        self.init = init_layer(nz, nfc[4])
        self.feat_8 = UpBlockComp(nfc[4], nfc[8])
        self.feat_16 = UpBlock(nfc[8], nfc[16])
        self.feat_32 = UpBlockComp(nfc[16], nfc[32])
        self.feat_64 = UpBlock(nfc[32], nfc[64])
        self.feat_128 = UpBlockComp(nfc[64], nfc[128])
        self.feat_256 = UpBlock(nfc[128], nfc[256])

        self.se_64 = SEBlock(nfc[4], nfc[64])
        self.se_128 = SEBlock(nfc[8], nfc[128])
        self.se_256 = SEBlock(nfc[16], nfc[256])

        self.to_128 = conv2d(nfc[128], nc, 1, 1, 0)
        self.to_big = conv2d(nfc[im_size], nc, 3, 1, 1)

        if im_size > 256:
            self.feat_512 = UpBlockComp(nfc[256], nfc[512])
            self.se_512 = SEBlock(nfc[32], nfc[512])
        if im_size > 512:
            self.feat_1024 = UpBlock(nfc[512], nfc[1024])
        self.apply(weights_init)

    @property
    def latent_shape(self) -> tuple[int]:
        return (self.nz,)

    def _noise_sides(self) -> list[int]:
        return [8, 32, 128] + ([512] if self.im_size > 256 else [])

    def _latent_noise(self, z: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per-sample noise maps drawn from generators seeded by each latent's bytes."""
        rows = z.detach().float().reshape(z.shape[0], -1).cpu().contiguous()
        gens = []
        for row in rows:
            digest = hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest()
            gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))
        noise = {}
        for side in self._noise_sides():
            pair = []
            for _ in range(2):
                maps = torch.stack([torch.randn(1, side, side, generator=g) for g in gens])
                pair.append(maps.to(device=z.device))
            noise[side] = (pair[0], pair[1])
        return noise

    def _noise(self, z: torch.Tensor) -> dict[int, tuple]:
        mode = "random" if self.training else self.eval_noise
        if mode not in EVAL_NOISE_MODES:
            raise ConfigError(f"eval_noise must be one of {', '.join(EVAL_NOISE_MODES)}{suggest(mode, EVAL_NOISE_MODES)}")
        if mode == "latent":
            return self._latent_noise(z)
        if mode == "none":
            zero = z.new_zeros(())
            return {side: (zero, zero) for side in self._noise_sides()}
        return {side: (None, None) for side in self._noise_sides()}

    def forward(self, z: torch.Tensor, return_small: bool = False) -> torch.Tensor | list[torch.Tensor]:
        noise = self._noise(z)
        feat_4 = self.init(z.reshape(z.shape[0], -1, 1, 1))
        feat_8 = self.feat_8(feat_4, noise[8])
        feat_16 = self.feat_16(feat_8)
        feat_32 = self.feat_32(feat_16, noise[32])
        feat_64 = self.se_64(feat_4, self.feat_64(feat_32))
        feat_128 = self.se_128(feat_8, self.feat_128(feat_64, noise[128]))
        feat = self.se_256(feat_16, self.feat_256(feat_128))
        if self.im_size > 256:
            feat = self.se_512(feat_32, self.feat_512(feat, noise[512]))
        if self.im_size > 512:
            feat = self.feat_1024(feat)
        full = torch.tanh(self.to_big(feat))
        if not return_small:
            return full
        return [full, torch.tanh(self.to_128(feat_128))]


def crop_part(image: torch.Tensor, part: int) -> torch.Tensor:
    """The reference's ``crop_image_by_part``: quarter ``part`` (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right) of ``(B, C, H, W)``, at half the size."""
    if part not in (0, 1, 2, 3):
        raise ValueError(f"part must be 0, 1, 2 or 3, got {part!r}")
    h = image.shape[2] // 2
    rows = slice(None, h) if part in (0, 1) else slice(h, None)
    cols = slice(None, h) if part in (0, 2) else slice(h, None)
    return image[:, :, rows, cols]


def reconstruction_targets(real: torch.Tensor, part: int, size: int = SMALL_SIZE) -> list[torch.Tensor]:
    """Targets of ``[rec_big, rec_small, rec_part]`` exactly as the reference's ``train_d``:
    the full real image resized to 128 (nearest), twice, and its quarter ``part`` resized to 128."""
    whole = F.interpolate(real, size=size)
    return [whole, whole, F.interpolate(crop_part(real, part), size=size)]


class Discriminator(nn.Module):
    """FastGAN discriminator.

    ``forward(images, label, part=None)``: ``images`` is ``[full, small_128]`` (the generator's
    ``return_small=True`` output) or one tensor, resized (nearest) to both sizes as the reference
    does. Returns logits ``(B, 50)``: the 5x5 patch logits of the big branch, then of the small
    branch. For ``label == "real"`` it returns ``(logits, [rec_big, rec_small, rec_part])``, each
    ``(B, nc, 128, 128)``, and ``part`` (0..3) picks the quarter of the 16x16 map that
    ``rec_part`` decodes: compare it with ``reconstruction_targets(real, part)[2]``.
    With ``features=True`` the intermediate feature maps (4 .. 64 of the big branch, then the
    small branch's) are returned last, for feature matching.
    """

    def __init__(self, ndf: int = 64, nc: int = 1, im_size: int = 256) -> None:
        super().__init__()
        _check_width("ndf", ndf)
        _check_channels(nc)
        _check_resolution(im_size)
        self.config = {"ndf": ndf, "nc": nc, "im_size": im_size}
        self.nc, self.im_size = nc, im_size
        nfc = channel_table(ndf, D_MULTIPLIERS)

        if im_size == 1024:
            self.down_from_big = nn.Sequential(
                conv2d(nc, nfc[1024], 4, 2, 1), nn.LeakyReLU(0.2),
                conv2d(nfc[1024], nfc[512], 4, 2, 1), nn.BatchNorm2d(nfc[512]), nn.LeakyReLU(0.2),
            )
        elif im_size == 512:
            self.down_from_big = nn.Sequential(conv2d(nc, nfc[512], 4, 2, 1), nn.LeakyReLU(0.2))
        else:
            self.down_from_big = nn.Sequential(conv2d(nc, nfc[512], 3, 1, 1), nn.LeakyReLU(0.2))

        self.down_4 = DownBlockComp(nfc[512], nfc[256])
        self.down_8 = DownBlockComp(nfc[256], nfc[128])
        self.down_16 = DownBlockComp(nfc[128], nfc[64])
        self.down_32 = DownBlockComp(nfc[64], nfc[32])
        self.down_64 = DownBlockComp(nfc[32], nfc[16])

        self.rf_big = nn.Sequential(
            conv2d(nfc[16], nfc[8], 1, 1, 0), nn.BatchNorm2d(nfc[8]), nn.LeakyReLU(0.2),
            conv2d(nfc[8], 1, 4, 1, 0),
        )

        self.se_2_16 = SEBlock(nfc[512], nfc[64])
        self.se_4_32 = SEBlock(nfc[256], nfc[32])
        self.se_8_64 = SEBlock(nfc[128], nfc[16])

        self.down_from_small = nn.Sequential(
            conv2d(nc, nfc[256], 4, 2, 1), nn.LeakyReLU(0.2),
            DownBlock(nfc[256], nfc[128]),
            DownBlock(nfc[128], nfc[64]),
            DownBlock(nfc[64], nfc[32]),
        )
        self.rf_small = conv2d(nfc[32], 1, 4, 1, 0)

        self.decoder_big = SimpleDecoder(nfc[16], nc)
        self.decoder_part = SimpleDecoder(nfc[32], nc)
        self.decoder_small = SimpleDecoder(nfc[32], nc)
        self.apply(weights_init)

    def forward(self, images: Sequence[torch.Tensor] | torch.Tensor, label: str, part: int | None = None,
                features: bool = False):
        if label not in ("real", "fake"):
            raise ValueError(f"label must be 'real' or 'fake', got {label!r}")
        if isinstance(images, torch.Tensor):
            images = [F.interpolate(images, size=self.im_size), F.interpolate(images, size=SMALL_SIZE)]
        big, small = images
        if label == "real" and part not in (0, 1, 2, 3):
            raise ValueError(f"a 'real' pass needs part in 0..3 (the quarter to reconstruct), got {part!r}")

        feat_2 = self.down_from_big(big)
        feat_4 = self.down_4(feat_2)
        feat_8 = self.down_8(feat_4)
        feat_16 = self.se_2_16(feat_2, self.down_16(feat_8))
        feat_32 = self.se_4_32(feat_4, self.down_32(feat_16))
        feat_last = self.se_8_64(feat_8, self.down_64(feat_32))
        feat_small = self.down_from_small(small)

        logits = torch.cat([self.rf_big(feat_last).flatten(1), self.rf_small(feat_small).flatten(1)], dim=1)
        out: tuple = (logits,)
        if label == "real":
            rec_big = self.decoder_big(feat_last)
            rec_small = self.decoder_small(feat_small)
            rec_part = self.decoder_part(crop_part(feat_32, part))
            out += ([rec_big, rec_small, rec_part],)
        if features:
            out += ([feat_4, feat_8, feat_16, feat_32, feat_last, feat_small],)
        return out[0] if len(out) == 1 else out


def _check_size(size: str) -> int:
    if size not in FASTGAN_SIZES:
        raise ConfigError(f"unknown FastGAN size {size!r}{suggest(str(size), list(FASTGAN_SIZES))}; "
                          f"choose one of {', '.join(FASTGAN_SIZES)}")
    return FASTGAN_SIZES[size]


def _check_build(resolution: int, channels: int) -> None:
    if resolution not in RESOLUTIONS:
        hint = suggest(str(resolution), [str(r) for r in RESOLUTIONS])
        raise ConfigError(f"unsupported FastGAN resolution {resolution!r}{hint}; "
                          f"choose one of {', '.join(map(str, RESOLUTIONS))}")
    if channels not in CHANNELS:
        raise ConfigError(f"FastGAN images have 1 or 3 channels, got {channels!r}")


def build_generator(size: str, resolution: int, channels: int = 1, nz: int = 256) -> Generator:
    """The generator of a named size (``FASTGAN_SIZES``) at 256, 512 or 1024 px."""
    width = _check_size(size)
    _check_build(resolution, channels)
    return Generator(ngf=width, nz=nz, nc=channels, im_size=resolution)


def build_discriminator(size: str, resolution: int, channels: int = 1) -> Discriminator:
    """The discriminator of a named size (``FASTGAN_SIZES``) at 256, 512 or 1024 px."""
    width = _check_size(size)
    _check_build(resolution, channels)
    return Discriminator(ndf=width, nc=channels, im_size=resolution)
