"""Class-conditional DDPM training as a LightningModule.

Each batch: images resized to the model's side, phase labels replaced by the null class with
probability ``label_dropout`` (what classifier-free guidance needs), a uniform timestep and
Gaussian noise per image, ``x_t`` from the DDPM schedule, MSE between the UNet's predicted noise
and the noise; AdamW with a linear warm-up; then the EMA UNet follows the UNet (diffusers'
warm-up of the decay, so short runs still have a useful EMA).

Validation reports ``val_loss``, the EMA UNet's denoising MSE on the held-out images at fixed
timesteps with noise seeded by each image's manifest index (and ``val_loss_unet`` for the raw
UNet): the same numbers for the same weights, whatever the worker count or order.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from microforge.trainers.fastgan.lightning import ema_update
from microforge.trainers.lightning_import import pl

from .model import NULL_CLASS, train_scheduler_config, unet_config

__all__ = ["DDPMModule", "denoising_mse", "to_model_images"]

# Fixed validation timesteps, as fractions of the schedule: low, middle and high noise.
VAL_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)


def to_model_images(images: torch.Tensor, side: int) -> torch.Tensor:
    """``(B, 1, side, side)`` float images from ``(B, H, W)``, ``(B, H, W, C)`` or ``(B, C, H, W)``
    (colour averaged to gray, resized with antialiasing)."""
    x = images.float()
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 1:
        x = x[:, :3].mean(1, keepdim=True)
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


def denoising_mse(unet: torch.nn.Module, scheduler: Any, x0: torch.Tensor, labels: torch.Tensor,
                  seeds: Sequence[int]) -> torch.Tensor:
    """The mean noise-prediction MSE of ``unet`` on images ``x0`` at the fixed timesteps
    :data:`VAL_FRACTIONS` of ``scheduler``'s schedule, image ``i``'s noise drawn from ``seeds[i]``."""
    steps = int(scheduler.config.num_train_timesteps)
    timesteps = [min(steps - 1, int(f * steps)) for f in VAL_FRACTIONS]
    noises = torch.stack([torch.randn((len(timesteps), *x0.shape[1:]), generator=torch.Generator().manual_seed(int(s)))
                          for s in seeds]).to(x0.device)  # (B, K, 1, H, W)
    losses = []
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
            noisy = scheduler.add_noise(x0, noises[:, k], tt).to(x0.dtype)
            losses.append(F.mse_loss(unet(noisy, tt, class_labels=labels).sample.float(), noises[:, k].float()))
    return torch.stack(losses).mean()


class DDPMModule(pl.LightningModule):
    """A class-conditional DDPM (Ho et al. 2020) with classifier-free guidance labels (Ho & Salimans 2022).

    Args:
        resolution: image side (32, 64, 128 or 256); size: ``tiny``, ``small``, ``base``; width,
            levels, layers_per_block: overrides of the UNet's shape (see :func:`unet_config`).
        lr, weight_decay, warmup_steps: AdamW and its linear warm-up.
        ema_decay: the EMA's maximum decay; label_dropout: probability of the null label.
        num_train_timesteps, beta_schedule: the DDPM noise schedule.
        classes, prompt_template: what the phase labels mean (recorded in the artifact).
    """

    def __init__(self, resolution: int = 64, size: str = "small", width: int | None = None, levels: int | None = None,
                 layers_per_block: int | None = None, lr: float = 1e-4, weight_decay: float = 0.0,
                 warmup_steps: int = 500, ema_decay: float = 0.9999, label_dropout: float = 0.1,
                 num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 classes: Sequence[str] = (), prompt_template: str | None = None) -> None:
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        self.save_hyperparameters()
        self.unet = UNet2DModel(**unet_config(resolution, size, width=width, levels=levels,
                                              layers_per_block=layers_per_block))
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler_config = train_scheduler_config(num_train_timesteps, beta_schedule)
        self.noise = DDPMScheduler(**self.scheduler_config)

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        side = self.hparams.resolution
        return {"image": torch.rand(batch_size, side, side) * 2 - 1,
                "phase_index": torch.randint(0, NULL_CLASS, (batch_size,))}

    def _noised(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.noise.add_noise(x0, noise, t).to(x0.dtype)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0 = to_model_images(batch["image"], self.hparams.resolution)
        labels = batch["phase_index"].long().to(x0.device)
        dropped = torch.rand(labels.shape, device=x0.device) < self.hparams.label_dropout
        labels = torch.where(dropped, torch.full_like(labels, NULL_CLASS), labels)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.hparams.num_train_timesteps, (x0.shape[0],), device=x0.device)
        pred = self.unet(self._noised(x0, noise, t), t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), noise.float())
        self.log("loss", loss.detach(), on_step=True, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))
        ema_update(self.unet_ema, self.unet, decay)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- validation: denoising MSE at fixed timesteps and seeded noise ----------------------------

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x0 = to_model_images(batch["image"], self.hparams.resolution)
        labels = batch["phase_index"].long().to(x0.device)
        for name, unet in (("val_loss", self.unet_ema), ("val_loss_unet", self.unet)):
            loss = denoising_mse(unet, self.noise, x0, labels, batch["index"].tolist())
            self.log(name, loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])

    # -- export ------------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"unet_ema": self.unet_ema, "unet": self.unet}

    def export_preprocessing(self) -> dict[str, Any]:
        from .model import NUM_CLASS_EMBEDS

        hp = self.hparams
        return {"image_size": hp.resolution, "channels": 1, "output": "images in [-1, 1]",
                "classes": list(hp.classes), "null_class": NULL_CLASS, "num_class_embeds": NUM_CLASS_EMBEDS,
                "prompt_template": hp.prompt_template, "scheduler": dict(self.scheduler_config),
                "diffusers": "diffusers/unet (EMA weights), diffusers/unet_raw, diffusers/scheduler",
                "sampler": "microforge.trainers.diffusion.sampling:ClassLabelSampler"}

    def export_files(self, directory: Path) -> None:
        """diffusers' own layout beside the card: ``diffusers/unet`` (the EMA UNet),
        ``diffusers/unet_raw`` and ``diffusers/scheduler``, each loadable with ``from_pretrained``."""
        from diffusers import DDPMScheduler

        root = Path(directory) / "diffusers"
        self.unet_ema.save_pretrained(root / "unet")
        self.unet.save_pretrained(root / "unet_raw")
        DDPMScheduler(**self.scheduler_config).save_pretrained(root / "scheduler")
