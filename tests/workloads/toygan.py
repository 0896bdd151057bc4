"""A tiny manual-optimisation, two-component workload that lives only in the tests.

It proves the platform generic: nothing in ``microforge/`` names it, yet it trains on Ray
workers, is searched by Tune, probed by the batch-size search, exported as a two-component
artifact (generator + discriminator), loaded back and served by the ``generate`` task. Ray
workers import it by its import path (the repository root is the driver's working directory).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from microforge.platform.config import ConfigModel
from microforge.trainers.data import SyntheticData
from microforge.trainers.lightning_import import pl
from microforge.trainers.workload import Cadence, RunPlan, Workload

WIDTHS = {"tiny": 32, "small": 64}


class ToyGenerator(nn.Module):
    """latent (B, latent_dim) -> (B, 1, size, size) in [-1, 1]: two linear layers."""

    def __init__(self, latent_dim: int = 8, size: int = 32, width: int = 32) -> None:
        super().__init__()
        self.config = {"latent_dim": latent_dim, "size": size, "width": width}
        self.net = nn.Sequential(nn.Linear(latent_dim, width), nn.LeakyReLU(0.2), nn.Linear(width, size * size),
                                 nn.Tanh())

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config["latent_dim"],)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        size = self.config["size"]
        return self.net(z).view(-1, 1, size, size)


class ToyDiscriminator(nn.Module):
    """(B, 1, size, size) -> (B,) logits."""

    def __init__(self, size: int = 32, width: int = 32) -> None:
        super().__init__()
        self.config = {"size": size, "width": width}
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


class ToyGAN(pl.LightningModule):
    """Non-saturating GAN loss, one D and one G step per batch (manual optimisation)."""

    def __init__(self, preset: str = "tiny", image_size: int = 32, latent_dim: int = 8, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = ToyGenerator(latent_dim, image_size, WIDTHS[preset])
        self.discriminator = ToyDiscriminator(image_size, WIDTHS[preset])

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        size = self.hparams.image_size
        return {"image": torch.rand(batch_size, 1, size, size)}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = batch["image"].float() * 2.0 - 1.0  # the blobs are in [0, 1]; signed_unit for the GAN
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=real.device)
        fake = self.generator(z)
        bce = nn.functional.binary_cross_entropy_with_logits
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_out = self.discriminator(fake)
        g_loss = bce(g_out, torch.ones_like(g_out))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, on_step=True, on_epoch=False, sync_dist=True,
                      batch_size=real.shape[0])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = self.hparams.lr
        return [torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))]

    def export_components(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def export_preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.hparams.image_size, "channels": 1}


class ToyGanOptions(ConfigModel):
    preset: Literal["tiny", "small"] = Field("tiny", description="network width")
    image_size: int = Field(32, ge=32, le=64, description="image side in pixels")
    latent_dim: int = Field(8, ge=1, le=256, description="latent size")
    lr: float = Field(2e-3, gt=0, le=1, description="Adam learning rate of both networks")
    train_samples: int = Field(16, ge=1, description="blobs per epoch")
    seed: int = Field(0, ge=0, description="data and weight seed")


def plan_toygan(options: ToyGanOptions) -> RunPlan:
    from microforge.datasets.blobs import BlobConfig

    config = options.to_json_dict()
    data = SyntheticData(renderer="microforge.datasets.blobs:render_blob_batch",
                         config=BlobConfig.load({"size": options.image_size}).to_json_dict(), seed=config.pop("seed"),
                         train_samples=config.pop("train_samples"))
    return RunPlan(config, data)


TOYGAN = Workload(
    name="toygan",
    description="a two-layer GAN on blobs (tests only)",
    module="tests.workloads.toygan:ToyGAN",
    options="tests.workloads.toygan:ToyGanOptions",
    plan="tests.workloads.toygan:plan_toygan",
    presets=("tiny", "small"),
    metric="g_loss",
    mode="min",
    optimization="manual",
    cadence=Cadence(every=2, unit="steps"),
    components=("generator", "discriminator"),
    transform={"name": "signed_unit", "params": {}},
    serve_task="generate",
    gradient_clip_val=None,
)
