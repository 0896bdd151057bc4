"""Delineation training: the Attention U-Net as a LightningModule, and the job that trains it.

The module trains on batches ``{"image", "clean", "mask", "snr_db", "index"}`` from
:func:`microforge.datasets.blobs.render_blob_batch` (images and masks ``(B, 1, H, W)``):

* loss: :class:`~microforge.trainers.losses.DelineationLoss` with the weights of
  :func:`~microforge.trainers.schedules.loss_weights` for the current epoch;
* AdamW (lr 1e-4, weight decay 1e-5) with a linear warm-up then cosine decay, stepped per batch;
* validation metrics (logged with the ``val_`` prefix): ``loss``, ``dice``, ``iou``,
  ``clean_dice`` (Dice on the noise-free rendering of the same samples), and on the first
  ``boundary_samples`` samples of each rank per epoch (distance transforms are slow at 512 px)
  ``hd95`` and ``boundary_f1``;
* ``val_ood_dice``: Dice on :data:`OOD_SAMPLES` blobs of the out-of-recipe counterpart of the
  training recipe (:func:`~microforge.datasets.blob_presets.ood_blob_config`: ranges just past
  the training ones), rendered once on the first validation, when the module knows its recipe
  (``blob``); every rank scores the same set, so the value is rank-independent;
* training augmentation: with ``random_rescale = a`` each batch is resized by a factor
  ``exp(U(-log(1 + a), log(1 + a)))`` from the module's seeded generator and cropped or padded
  back, so the net meets objects at scales its recipe does not draw.

Gradient clipping, precision and early stopping are launcher (Trainer) settings; the noise
curriculum drives the synthesis of each training epoch through :func:`curriculum_settings`
(see :mod:`microforge.trainers.unet.workload`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from microforge.datasets.curriculum import curriculum_phase
from microforge.platform.errors import ConfigError
from microforge.trainers.lightning_import import pl
from microforge.trainers.losses import DelineationLoss
from microforge.trainers.metrics import boundary_f1, dice_score, hausdorff_distance, iou_score
from microforge.trainers.schedules import adamw_warmup_cosine, loss_weights

from .model import unet_from_preset

__all__ = ["UNetModule", "curriculum_settings"]

log = logging.getLogger(__name__)

VAL_METRICS = ("loss", "dice", "iou", "clean_dice", "hd95", "boundary_f1")
OOD_SAMPLES = 16


def curriculum_settings(epoch: int, total_epochs: int) -> dict[str, float]:
    """Renderer overrides ``{noise_scale, mixed_prob}`` of a training epoch (the default curriculum)."""
    phase = curriculum_phase(epoch, total_epochs)
    return {"noise_scale": phase.noise_scale, "mixed_prob": phase.mixed_prob}


class UNetModule(pl.LightningModule):
    """Attention U-Net delineation training.

    Args:
        preset: ``tiny``, ``small`` or ``standard`` (see ``UNET_PRESETS``).
        model_overrides: constructor arguments replacing the preset's (e.g. ``{"dropout": 0.0}``).
        image_size: side of the training images (recorded in the artifact's preprocessing).
        lr, weight_decay: AdamW settings.
        warmup_fraction: share of all optimizer steps spent in linear LR warm-up.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
        boundary_samples: validation samples per rank and epoch that get HD95 and boundary F1.
        boundary_tolerance: boundary-F1 tolerance in pixels.
        blob: the training ``BlobConfig`` (JSON) when training on rendered blobs: its object
            scale goes into the artifact, and its out-of-recipe counterpart gives ``val_ood_dice``.
        random_rescale: training-time rescaling range ``a`` (0: off), see the module docstring.
        seed: seed of the augmentation generator (offset by the rank).

    Raises:
        ConfigError: unknown preset or override, a value out of range, or an ``image_size`` the
            network cannot take (not a multiple of ``2**(depth - 1)``).
    """

    def __init__(
        self,
        preset: str = "tiny",
        model_overrides: dict[str, Any] | None = None,
        image_size: int = 128,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        boundary_samples: int = 32,
        boundary_tolerance: float = 2.0,
        blob: dict[str, Any] | None = None,
        random_rescale: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or not 0 <= warmup_fraction < 1 or not 0 <= min_lr_ratio <= 1:
            raise ConfigError("UNetModule: need lr > 0, weight_decay >= 0, warmup_fraction in [0, 1), "
                              f"min_lr_ratio in [0, 1]; got {lr}, {weight_decay}, {warmup_fraction}, {min_lr_ratio}")
        if boundary_samples < 0 or boundary_tolerance < 0:
            raise ConfigError("UNetModule: boundary_samples and boundary_tolerance must be >= 0")
        if not 0 <= random_rescale <= 3:
            raise ConfigError(f"UNetModule: random_rescale must be in [0, 3], got {random_rescale}")
        self.save_hyperparameters()
        self.model = unet_from_preset(preset, **(model_overrides or {}))
        if image_size % self.model.size_multiple:
            raise ConfigError(f"image size {image_size} does not fit U-Net preset '{preset}': "
                              f"use a multiple of {self.model.size_multiple}")
        self.loss = DelineationLoss()
        self._val: dict[str, list[float]] = {}
        self._ood: dict[str, torch.Tensor] | None = None
        self._rng: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images -> ``(B, 1, H, W)`` logits."""
        return self.model(x)

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A random batch of the training shape, for memory and speed probes (tune's batch-size search)."""
        size = self.hparams.image_size
        image = torch.rand(batch_size, 1, size, size)
        return {"image": image, "mask": (image > 0.5).float()}

    # -- training ------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        epoch, total = self.current_epoch, self.trainer.max_epochs
        alpha, beta, gamma = loss_weights(epoch, total)
        self.loss.set_weights(alpha, beta, gamma)
        phase = curriculum_phase(epoch, total)
        self.log_dict({"loss_beta": beta, "loss_gamma": gamma, "noise_scale": phase.noise_scale,
                       "mixed_prob": phase.mixed_prob}, on_step=False, on_epoch=True, sync_dist=True)
        if self.trainer.is_global_zero:
            log.info("epoch %d/%d: curriculum phase %s (noise_scale %.2f, mixed_prob %.2f), "
                     "loss weights %.2f/%.2f/%.2f",
                     epoch + 1, total, phase.name, phase.noise_scale, phase.mixed_prob, alpha, beta, gamma)

    @staticmethod
    def _inputs(batch: dict[str, torch.Tensor], key: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 1, H, W)`` float and binary masks: rendered blobs come that way; a dataset
        read through the manifest has ``(B, H, W)`` images and 0/255 (or 0/1) masks."""
        image, mask = batch[key].float(), batch["mask"]
        if image.ndim == 3:
            image, mask = image.unsqueeze(1), mask.unsqueeze(1)
        return image, (mask > 0).float()

    def _rescale(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch resized by a random factor, then centre-cropped or edge-padded (masks with
        0) back to its size at a random offset."""
        import torch.nn.functional as F

        if self._rng is None:
            self._rng = torch.Generator().manual_seed(int(self.hparams.seed) + 7919 * self.global_rank)
        bound = math.log1p(self.hparams.random_rescale)
        factor = math.exp((torch.rand((), generator=self._rng).item() * 2 - 1) * bound)
        h, w = image.shape[-2:]
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        if (nh, nw) == (h, w):
            return image, mask
        image = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False, antialias=factor < 1)
        mask = (F.interpolate(mask, size=(nh, nw), mode="bilinear", align_corners=False) > 0.5).float()
        if factor > 1:
            y = int(torch.randint(0, nh - h + 1, (), generator=self._rng))
            x = int(torch.randint(0, nw - w + 1, (), generator=self._rng))
            return image[..., y:y + h, x:x + w], mask[..., y:y + h, x:x + w]
        y = int(torch.randint(0, h - nh + 1, (), generator=self._rng))
        x = int(torch.randint(0, w - nw + 1, (), generator=self._rng))
        pad = (x, w - nw - x, y, h - nh - y)
        return F.pad(image, pad, mode="replicate"), F.pad(mask, pad, value=0.0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, mask = self._inputs(batch)
        if self.hparams.random_rescale > 0:
            image, mask = self._rescale(image, mask)
        logits = self.model(image)
        loss, parts = self.loss(logits, mask)
        size = image.shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log_dict({f"train_{k}": v for k, v in parts.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_warmup_cosine(self.parameters(), self.trainer.estimated_stepping_batches, lr=hp.lr,
                                   weight_decay=hp.weight_decay, warmup_fraction=hp.warmup_fraction,
                                   min_lr_ratio=hp.min_lr_ratio)

    # -- validation ----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val = {name: [] for name in VAL_METRICS}
        if self._ood is None and self.hparams.blob:
            from microforge.datasets.blob_presets import OOD_SEED, ood_blob_config
            from microforge.datasets.blobs import render_blob_batch

            config = ood_blob_config({**self.hparams.blob, "size": self.hparams.image_size})
            arrays = render_blob_batch(config, OOD_SEED, range(OOD_SAMPLES))
            self._ood = {"image": torch.from_numpy(arrays["image"]), "mask": torch.from_numpy(arrays["mask"])}

    def _ood_dice(self) -> float | None:
        if self._ood is None:
            return None
        scores = []
        for k in range(0, OOD_SAMPLES, 8):  # small batches: as little memory as training needs
            with torch.no_grad():
                logits = self.model(self._ood["image"][k:k + 8].to(self.device)).float().cpu().numpy()
            scores.extend(dice_score(logits, self._ood["mask"][k:k + 8].numpy(), threshold=0.0, reduction="none"))
        return float(np.mean(scores))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        image, mask = self._inputs(batch)
        logits = self.model(image)
        loss, _ = self.loss(logits, mask)
        # Metrics binarise at logit 0 (probability 0.5), on CPU numpy like the eval command.
        pred, target = logits.float().cpu().numpy(), mask.cpu().numpy()
        val = self._val
        val["loss"].extend([float(loss)] * len(target))
        val["dice"].extend(dice_score(pred, target, threshold=0.0, reduction="none"))
        val["iou"].extend(iou_score(pred, target, threshold=0.0, reduction="none"))
        if "clean" in batch:  # rendered data only: the noise-free image of the same sample
            clean_pred = self.model(self._inputs(batch, "clean")[0]).float().cpu().numpy()
            val["clean_dice"].extend(dice_score(clean_pred, target, threshold=0.0, reduction="none"))
        room = self.hparams.boundary_samples - len(val["hd95"])
        if room > 0:
            p, t = pred[:room], target[:room]
            val["hd95"].extend(hausdorff_distance(p, t, threshold=0.0, reduction="none"))
            val["boundary_f1"].extend(boundary_f1(p, t, self.hparams.boundary_tolerance, threshold=0.0,
                                                  reduction="none"))

    def on_validation_epoch_end(self) -> None:
        # Sum and count on every rank, then one all-reduce: a mean over all samples whatever
        # the share of each rank.
        sums = [math.fsum(self._val[name]) for name in VAL_METRICS]
        counts = [len(self._val[name]) for name in VAL_METRICS]
        totals = torch.tensor(sums + counts, dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        n = len(VAL_METRICS)
        values = {f"val_{name}": float(totals[i] / totals[n + i]) for i, name in enumerate(VAL_METRICS)
                  if totals[n + i] > 0}
        ood = self._ood_dice()
        if ood is not None:
            values["val_ood_dice"] = ood
        if values:
            self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True)  # equal on all ranks already

    # -- export --------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def export_preprocessing(self) -> dict[str, Any]:
        """What the artifact records besides the transform (``unit_range``: integers divided by
        their dtype's maximum), and, for a model trained on rendered blobs, the ``scale`` it
        works at: the training image size and the median silhouette and dot radii (px) of its
        recipe, and the percentiles its images were normalised to, if they were.
        :func:`~microforge.trainers.predict.segment_probabilities` brings inputs to both."""
        scale = {}
        if self.hparams.blob:
            from microforge.datasets.blob_presets import blob_object_scale
            from microforge.datasets.blobs import BlobConfig

            blob = {**self.hparams.blob, "size": self.hparams.image_size}
            scale = {"scale": {"image_size": self.hparams.image_size, **blob_object_scale(blob),
                               "random_rescale": self.hparams.random_rescale}}
            recipe = BlobConfig.load(blob)
            if recipe.bit_depths:  # training images were percentile-normalised at this scale
                scale["scale"]["percentile_clip"] = list(recipe.percentile_clip)
        return {**scale,
            "channels": self.model.config["in_channels"],
            "layout": "(B, 1, H, W) float32",
            "size_multiple": self.model.size_multiple,
            "image_size": self.hparams.image_size,
            "output": "logits",
            "threshold": 0.0,
            "task": "binary delineation: 1 inside the silhouette",
        }
