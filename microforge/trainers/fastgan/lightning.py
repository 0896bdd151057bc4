"""FastGAN training as a manual-optimisation LightningModule (the reference's ``train.py`` step).

Each batch: one discriminator step (hinge loss with the reference's randomised labels on
DiffAugment-ed real and fake images, plus the L1 reconstruction loss of its three decoders on
real images, plus an optional R1 or WGAN-GP gradient penalty), one generator step
(``-D(fake).mean()`` plus optional feature matching: L1 between the batch-mean discriminator
features of fake and real images), then an EMA update of the generator that copies its buffers
(BatchNorm statistics) too. The optional terms exist so that the original CARS presets
(feature matching 10-30, gradient penalty 10) mean something. Validation generates images with
the EMA generator from fixed latents, reports ``val_fd``, the Fréchet distance of their texture
features to the held-out real images (the feature function is named by import path, so this
module does not import the evaluation package), and writes a sample grid to TensorBoard and to
``samples/step_NNNNNNN.png`` in the run directory.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from microforge.platform.imports import import_object
from microforge.trainers.lightning_import import pl

from .diffaugment import diff_augment
from .model import FASTGAN_SIZES, Discriminator, Generator, reconstruction_targets

__all__ = ["FastGANModule", "ema_update", "feature_matching", "gradient_penalty", "sample_grid"]

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


def feature_matching(fake: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the L1 distance between batch-mean features (real ones detached)."""
    return sum(F.l1_loss(f.mean(0), r.detach().mean(0)) for f, r in zip(fake, real))


def gradient_penalty(discriminator: torch.nn.Module, kind: str, real: torch.Tensor, logits_real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """``r1``: ``0.5 E||grad_x D(x)||^2`` on real images (``real`` must require grad and
    ``logits_real`` come from it); ``wgan-gp``: ``E(||grad D||-1)^2`` on random interpolates."""
    if kind == "r1":
        (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
        return 0.5 * grad.pow(2).flatten(1).sum(1).mean()
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed, "fake").sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def sample_grid(images: torch.Tensor, columns: int = 4) -> np.ndarray:
    """``(H*rows, W*columns)`` or ``(..., 3)`` uint8 tiles of images in [-1, 1] (channel 0 or RGB)."""
    unit = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    n, c, h, w = unit.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, image in enumerate(unit):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image.transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


class FastGANModule(pl.LightningModule):
    """FastGAN (Liu et al., ICLR 2021) with an EMA generator.

    Args:
        size: ``micro`` .. ``xlarge`` (ngf = ndf of :data:`FASTGAN_SIZES`); ``width`` overrides it.
        resolution: 256, 512 or 1024; channels: 1 or 3; nz: latent size.
        lr_g, lr_d: Adam learning rates (betas 0.5, 0.999); ema_decay: generator EMA.
        augment: DiffAugment policy (``color``, ``translation``, ``cutout``); pad_mode:
            ``reflect`` (microscopy default) or ``zeros`` (the reference).
        recon_weight: weight of the decoders' L1 reconstruction loss.
        fm_weight: weight of feature matching in the generator loss (0: off).
        penalty, penalty_weight: ``r1`` or ``wgan-gp`` gradient penalty of the discriminator (weight 0: off).
        fd_samples: EMA images generated for ``val_fd`` at each validation.
        sample_images: EMA images in each validation's sample grid.
    """

    def __init__(self, size: str = "micro", resolution: int = 256, channels: int = 1, nz: int = 256,
                 width: int | None = None, lr_g: float = 2e-4, lr_d: float = 2e-4, ema_decay: float = 0.999,
                 augment: str = "translation,cutout", pad_mode: str = "reflect", recon_weight: float = 1.0,
                 fm_weight: float = 0.0, penalty: str = "r1", penalty_weight: float = 0.0, fd_samples: int = 16,
                 sample_images: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        ngf = width or FASTGAN_SIZES[size]
        self.generator = Generator(ngf=ngf, nz=nz, nc=channels, im_size=resolution)
        self.discriminator = Discriminator(ndf=ngf, nc=channels, im_size=resolution)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        diff_augment(torch.zeros(1, channels, 8, 8), augment, pad_mode=pad_mode)  # a bad policy fails here
        if penalty not in ("r1", "wgan-gp"):
            raise ValueError(f"penalty must be 'r1' or 'wgan-gp', got {penalty!r}")
        self.register_buffer("fixed_z", torch.randn(max(1, fd_samples, sample_images), nz,
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
        penalised = hp.penalty_weight > 0
        if penalised and hp.penalty == "r1":
            real.requires_grad_(True)
        logits_real, recs, features_real = self.discriminator(real, "real", part, features=True)
        hinge_real = F.relu(torch.rand_like(logits_real) * 0.2 + 0.8 - logits_real).mean()
        recon = sum(F.l1_loss(rec, target) for rec, target in zip(recs, reconstruction_targets(real, part)))
        logits_fake = self.discriminator([image.detach() for image in fake], "fake")
        hinge_fake = F.relu(torch.rand_like(logits_fake) * 0.2 + 0.8 + logits_fake).mean()
        d_loss = hinge_real + hp.recon_weight * recon + hinge_fake
        logged = {}
        if penalised:
            penalty = gradient_penalty(self.discriminator, hp.penalty, real, logits_real, fake[0])
            d_loss = d_loss + hp.penalty_weight * penalty
            logged["d_penalty"] = penalty.detach()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

        logits_g, features_fake = self.discriminator(fake, "fake", features=True)
        g_loss = -logits_g.mean()
        if hp.fm_weight > 0:
            matching = feature_matching(features_fake, features_real)
            g_loss = g_loss + hp.fm_weight * matching
            logged["g_feature_matching"] = matching.detach()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        ema_update(self.generator_ema, self.generator, hp.ema_decay)
        self.log_dict({"d_loss": d_loss.detach(), "d_recon": recon.detach(), "g_loss": g_loss.detach(), **logged},
                      on_step=True, on_epoch=True, sync_dist=True, batch_size=real.shape[0])

    def on_train_start(self) -> None:
        # A run started from another run's checkpoint (population-based training) restores its
        # optimizer state, learning rates included: this run's own rates apply.
        for optimizer, lr in zip(self.optimizers(), (self.hparams.lr_g, self.hparams.lr_d)):
            for group in optimizer.param_groups:
                group["lr"] = lr

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
            images = self.generator_ema(self.fixed_z)
        fake = self._texture(images[:max(2, self.hparams.fd_samples)])
        stats = import_object(GAUSSIAN_STATS, "gaussian stats")
        distance = import_object(FRECHET, "Fréchet distance")(*stats(real), *stats(fake))
        self.log("val_fd", float(distance), on_step=False, on_epoch=True, sync_dist=True)
        if self.hparams.sample_images and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_samples(sample_grid(images[:self.hparams.sample_images]))

    def _write_samples(self, grid: np.ndarray) -> None:
        """The EMA generator's fixed-z samples: TensorBoard image and a PNG under ``samples/``."""
        from PIL import Image

        step = int(self.trainer.fit_loop.epoch_loop.batch_progress.total.processed)
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image("samples/ema", grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
        folder = Path(self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(folder / f"step_{step:07d}.png")

    # -- export ----------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"generator_ema": self.generator_ema, "generator": self.generator,
                "discriminator": self.discriminator}

    def export_preprocessing(self) -> dict[str, Any]:
        hp = self.hparams
        return {"image_size": hp.resolution, "channels": hp.channels, "output": "images in [-1, 1]"}
