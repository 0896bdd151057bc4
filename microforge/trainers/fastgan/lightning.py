"""FastGAN training as a manual-optimisation LightningModule (the reference's ``train.py`` step).

Each batch: one discriminator step (hinge loss with the reference's randomised labels on
DiffAugment-ed real and fake images, plus the L1 reconstruction loss of its three decoders on
real images), one generator step (``-D(fake).mean()``), then an EMA update of the generator that
copies its buffers (BatchNorm statistics) too. Validation generates images with the EMA
generator from fixed latents and reports ``val_fd``, the Fréchet distance of their texture
features to the held-out real images (the feature function is named by import path, so this
module does not import the evaluation package).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from microforge.platform.imports import import_object
from microforge.trainers.lightning_import import pl

from .diffaugment import diff_augment
from .model import FASTGAN_SIZES, Discriminator, Generator, reconstruction_targets

__all__ = ["FastGANModule", "ema_update"]

log = logging.getLogger(__name__)

TEXTURE_FEATURES = "microforge.evaluate.features:texture_descriptor"
FRECHET = "microforge.evaluate.distances:frechet_distance"
GAUSSIAN_STATS = "microforge.evaluate.distances:gaussian_stats"


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers (BatchNorm running
    statistics, spectral-norm vectors) are copied, which the original FASTGAN forgot."""
    for target, source in zip(ema.parameters(), model.parameters()):
        target.lerp_(source.detach(), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers()):
        target.copy_(source)


class FastGANModule(pl.LightningModule):
    """FastGAN (Liu et al., ICLR 2021) with an EMA generator.

    Args:
        size: ``micro`` .. ``xlarge`` (ngf = ndf of :data:`FASTGAN_SIZES`); ``width`` overrides it.
        resolution: 256, 512 or 1024; channels: 1 or 3; nz: latent size.
        lr_g, lr_d: Adam learning rates (betas 0.5, 0.999); ema_decay: generator EMA.
        augment: DiffAugment policy (``color``, ``translation``, ``cutout``); pad_mode:
            ``reflect`` (microscopy default) or ``zeros`` (the reference).
        recon_weight: weight of the decoders' L1 reconstruction loss.
        fd_samples: EMA images generated for ``val_fd`` at each validation.
    """

    def __init__(self, size: str = "micro", resolution: int = 256, channels: int = 1, nz: int = 256,
                 width: int | None = None, lr_g: float = 2e-4, lr_d: float = 2e-4, ema_decay: float = 0.999,
                 augment: str = "translation,cutout", pad_mode: str = "reflect", recon_weight: float = 1.0,
                 fd_samples: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        ngf = width or FASTGAN_SIZES[size]
        self.generator = Generator(ngf=ngf, nz=nz, nc=channels, im_size=resolution)
        self.discriminator = Discriminator(ndf=ngf, nc=channels, im_size=resolution)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        diff_augment(torch.zeros(1, channels, 8, 8), augment, pad_mode=pad_mode)  # a bad policy fails here
        self.register_buffer("fixed_z", torch.randn(max(1, fd_samples), nz,
                                                    generator=torch.Generator().manual_seed(0)), persistent=False)
        self._val_features: list[np.ndarray] = []

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        hp = self.hparams
        return {"image": torch.rand(batch_size, hp.channels, hp.resolution, hp.resolution) * 2 - 1}

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.hparams.augment, pad_mode=self.hparams.pad_mode)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        real = batch["image"].float()
        if real.shape[1] != hp.channels:
            raise ValueError(f"a {hp.channels}-channel FastGAN cannot train on {real.shape[1]}-channel images")
        z = torch.randn(real.shape[0], hp.nz, device=real.device)
        fake = [self._augment(image) for image in self.generator(z, return_small=True)]
        real = self._augment(real)

        part = int(torch.randint(0, 4, ()).item())
        logits_real, recs = self.discriminator(real, "real", part)
        hinge_real = F.relu(torch.rand_like(logits_real) * 0.2 + 0.8 - logits_real).mean()
        recon = sum(F.l1_loss(rec, target) for rec, target in zip(recs, reconstruction_targets(real, part)))
        logits_fake = self.discriminator([image.detach() for image in fake], "fake")
        hinge_fake = F.relu(torch.rand_like(logits_fake) * 0.2 + 0.8 + logits_fake).mean()
        d_loss = hinge_real + hp.recon_weight * recon + hinge_fake
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

        g_loss = -self.discriminator(fake, "fake").mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        ema_update(self.generator_ema, self.generator, hp.ema_decay)
        self.log_dict({"d_loss": d_loss.detach(), "d_recon": recon.detach(), "g_loss": g_loss.detach()},
                      on_step=True, on_epoch=True, sync_dist=True, batch_size=real.shape[0])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=(0.5, 0.999)),
                torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=(0.5, 0.999))]

    # -- validation: texture Fréchet distance of EMA samples to held-out real images -----------

    def _texture(self, images: torch.Tensor) -> np.ndarray:
        describe = import_object(TEXTURE_FEATURES, "texture features")
        unit = ((images.float().clamp(-1, 1) + 1) / 2).cpu().numpy()
        return np.stack([describe(image.mean(axis=0)) for image in unit])

    def on_validation_epoch_start(self) -> None:
        self._val_features = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._val_features.append(self._texture(batch["image"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val_features:
            return
        # Every rank's held-out images: a rank alone may hold too few for a covariance.
        local = torch.from_numpy(np.concatenate(self._val_features)).to(self.device)
        real = self.all_gather(local).reshape(-1, local.shape[-1]).cpu().numpy().astype(np.float64)
        self.generator_ema.eval()
        with torch.no_grad():
            fake = self._texture(self.generator_ema(self.fixed_z))
        stats = import_object(GAUSSIAN_STATS, "gaussian stats")
        distance = import_object(FRECHET, "Fréchet distance")(*stats(real), *stats(fake))
        self.log("val_fd", float(distance), on_step=False, on_epoch=True, sync_dist=True)

    # -- export ----------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"generator_ema": self.generator_ema, "generator": self.generator,
                "discriminator": self.discriminator}

    def export_preprocessing(self) -> dict[str, Any]:
        hp = self.hparams
        return {"image_size": hp.resolution, "channels": hp.channels, "output": "images in [-1, 1]"}
