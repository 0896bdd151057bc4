"""CycleGAN networks as in junyanz/pytorch-CycleGAN-and-pix2pix (``models/networks.py``), written anew.

* :class:`ResnetGenerator`: ReflectionPad(3) + conv7 (``ngf``) + IN + ReLU, two stride-2 conv3
  downsamplings, ``n_blocks`` residual blocks (reflection padding, InstanceNorm without affine
  parameters, no dropout), two transposed-conv3 upsamplings, ReflectionPad(3) + conv7 + Tanh.
  Convolutions carry biases because InstanceNorm has no affine shift (the reference's
  ``use_bias``). The reference uses 9 blocks at 256 px and 6 at 128 px (:func:`blocks_for`).
* :class:`NLayerDiscriminator`: the ``basic`` 70 x 70 PatchGAN: conv4 s2 (64, no norm) + LReLU 0.2,
  conv4 s2 (128) and conv4 s2 (256) with IN, conv4 s1 (512) with IN, conv4 s1 to one channel.
* :class:`ImagePool`: the history of 50 generated images that the discriminators see.
* :func:`init_weights`: N(0, 0.02) for conv weights, zero biases (the reference's ``normal``).

Each module stores ``config``, its JSON constructor arguments (artifacts rebuild it from them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from microforge.platform.errors import ConfigError

__all__ = ["ImagePool", "NLayerDiscriminator", "ResnetBlock", "ResnetGenerator", "blocks_for", "count_parameters",
           "init_weights"]


def blocks_for(size: int) -> int:
    """Residual blocks of the reference generator at ``size`` px: 9 at 256 px and above, else 6."""
    return 9 if size >= 256 else 6


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"CycleGAN {name} must be a positive integer, got {value!r}")


class ResnetBlock(nn.Module):
    """``x + [pad, conv3, IN, ReLU, pad, conv3, IN](x)`` with reflection padding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """``(B, input_nc, H, W)`` in [-1, 1] -> ``(B, output_nc, H, W)`` in [-1, 1]; H and W multiples of 4.

    Raises:
        ConfigError: a non-positive channel count, width or block count.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        _check_positive(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_blocks=n_blocks)
        self.config = {"input_nc": input_nc, "output_nc": output_nc, "ngf": ngf, "n_blocks": n_blocks}
        self.input_nc, self.output_nc = input_nc, output_nc
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=True), _norm(ngf),
                                   nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                       _norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=True), _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.input_nc:
            raise ValueError(f"this generator takes {self.input_nc}-channel images, got {x.shape[1]} channels")
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image sides must be multiples of 4, got {tuple(x.shape[-2:])}")
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``(B, input_nc, H, W)`` -> ``(B, 1, H/8 - 2, W/8 - 2)`` logits (30 x 30 at 256 px;
    with ``n_layers=3`` each logit sees a 70 x 70 window).

    Raises:
        ConfigError: a non-positive channel count, width or layer count.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        _check_positive(input_nc=input_nc, ndf=ndf, n_layers=n_layers)
        self.config = {"input_nc": input_nc, "ndf": ndf, "n_layers": n_layers}
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=True), _norm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference's ``normal`` init: conv weights N(0, gain), biases 0 (norm layers have no weights here)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ImagePool:
    """The reference's image buffer: up to ``size`` past generated images. Until it is full each
    new image is stored and returned; afterwards, with probability 1/2, a random stored image is
    returned and replaced by the new one, else the new one is returned. ``size`` 0 disables it.

    Draws use its own ``torch.Generator`` (seeded), never the global random state.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ConfigError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                k = int(torch.randint(0, self.size, (), generator=self.generator).item())
                old = self.images[k].to(image.device)
                self.images[k] = image.clone()
                out.append(old)
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [im.cpu() for im in self.images], "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = list(state["images"])
        self.generator.set_state(state["rng"])
