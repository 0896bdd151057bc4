"""CycleGAN training as a manual-optimisation LightningModule (the reference's ``cycle_gan_model.py``).

Per batch, in the reference's order: the generators' step (LSGAN + cycle + identity losses, plus
the colorization terms), then the discriminators' step on real images and on fakes drawn from the
image pools, each discriminator's loss halved. Learning rates stay constant for ``n_epochs`` and
decay linearly over the last ``decay_epochs``; the schedulers step at each epoch's end.

Names: ``generator_ab`` is the reference's ``netG_A`` (A -> B), ``generator_ba`` its ``netG_B``;
``discriminator_a`` judges domain A images (the reference's ``netD_B``) and ``discriminator_b``
domain B images (``netD_A``). Domain A is grayscale (1 channel) and B RGB, so ``generator_ab`` is
1 -> 3 and ``generator_ba`` 3 -> 1; the identity terms feed ``generator_ba`` the A image replicated
to 3 channels and ``generator_ab`` the luminance of the B image.

Colorization terms (see :mod:`.losses`), each with one weight, on two outputs: ``fake`` is
``fake_B = G_AB(A)`` (GT: A's mask, structure: A, colours: the batch's B images) and ``rec`` is
``rec_B = G_AB(G_BA(B))`` (GT: B's own dark-nucleus mask, structure and colours: B). A term whose
weight is 0 is still measured and logged, without gradient.

Every ``snapshot_every`` epochs rank 0 writes the four components as an artifact to
``<run>/epochs/epoch_NNNN/`` (what ``microforge eval cyclegan`` scores: Ray Train keeps only the
best and latest checkpoints).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from microforge.platform.imports import import_object
from microforge.trainers.lightning_import import pl

from .losses import DEFAULT_LOSS_WEIGHTS, HSV_BINS, LOSS_NAMES, colorvar_loss, dice_score, gt_loss, \
    histogram_correlation, hsv_histogram, hsv_loss, luminance, ssim, to_unit
from .model import ImagePool, NLayerDiscriminator, ResnetGenerator, blocks_for

__all__ = ["CycleGANModule", "EPOCHS_DIR", "WIDTHS", "linear_decay"]

log = logging.getLogger(__name__)

WIDTHS = {"reference": 64, "small": 32}
EPOCHS_DIR = "epochs"
TEXTURE_FEATURES = "microforge.evaluate.features:texture_descriptor"
FRECHET = "microforge.evaluate.distances:frechet_distance"
GAUSSIAN_STATS = "microforge.evaluate.distances:gaussian_stats"


def linear_decay(n_epochs: int, decay_epochs: int):
    """The reference's rule: factor ``1 - max(0, epoch + 1 - n_epochs) / (decay_epochs + 1)``."""
    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - n_epochs) / float(decay_epochs + 1)
    return factor


def image_rows(a: torch.Tensor, fake_b: torch.Tensor, rec_a: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``(3, rows * S, 4 * S)`` in [0, 1]: one row per sample: A, fake B, reconstructed A, GT."""
    grey = lambda x: x.expand(-1, 3, -1, -1)  # noqa: E731
    row = torch.cat([grey(to_unit(a)), to_unit(fake_b), grey(to_unit(rec_a)), grey(gt.float())], dim=3)
    return torch.cat(list(row.clamp(0, 1)), dim=1)


class CycleGANModule(pl.LightningModule):
    """CycleGAN (Zhu et al., ICCV 2017) with the colorization terms.

    Args:
        preset: ``reference`` (ngf = ndf = 64) or ``small`` (32); ``width`` overrides both.
        size: training image side; n_blocks: residual blocks (None: 9 at 256 px, else 6).
        lr, beta1: Adam (betas ``(beta1, 0.999)``) of both optimizers.
        lambda_a, lambda_b: cycle weights; lambda_identity: identity weight relative to them.
        pool_size: image pool of past fakes (0: none).
        decay_epochs: epochs of linear decay at the end (None: half of the run).
        loss_weights: ``{"gt", "colorvar", "hsv"}`` weights (missing names: 5, 5, 10).
        gt_threshold: luminance threshold (in [0, 1]) below which an output pixel is a nucleus.
        invert_a, seed: recorded in the artifact / seeds the image pools.
        snapshot_every: write an epoch artifact every N epochs (0: never).
    """

    def __init__(self, preset: str = "reference", size: int = 128, width: int | None = None,
                 n_blocks: int | None = None, lr: float = 2e-4, beta1: float = 0.5, lambda_a: float = 10.0,
                 lambda_b: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50,
                 decay_epochs: int | None = None, loss_weights: dict[str, float] | None = None,
                 gt_threshold: float = 0.5, invert_a: bool = False, seed: int = 0, snapshot_every: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        width = width or WIDTHS[preset]
        blocks = n_blocks or blocks_for(size)
        self.generator_ab = ResnetGenerator(1, 3, width, blocks)
        self.generator_ba = ResnetGenerator(3, 1, width, blocks)
        self.discriminator_a = NLayerDiscriminator(1, width)
        self.discriminator_b = NLayerDiscriminator(3, width)
        self.weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.pool_a, self.pool_b = ImagePool(pool_size, seed), ImagePool(pool_size, seed + 1)
        self._val: dict[str, list] = {}
        self._shown: dict[str, torch.Tensor] | None = None

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        s = self.hparams.size
        return {"a": torch.rand(batch_size, 1, s, s) * 2 - 1, "a_gt": (torch.rand(batch_size, 1, s, s) > 0.5).float(),
                "has_gt": torch.ones(batch_size), "b": torch.rand(batch_size, 3, s, s) * 2 - 1}

    # -- losses --------------------------------------------------------------------------------

    def colorization_terms(self, fake_b: torch.Tensor, rec_b: torch.Tensor, batch: dict[str, torch.Tensor]
                           ) -> dict[str, torch.Tensor]:
        """The unweighted ``gt``, ``colorvar`` and ``hsv`` terms (fake + rec); a zero-weight term
        is computed without gradient."""
        real_a, real_b = batch["a"].float(), batch["b"].float()
        b_mask = (luminance(to_unit(real_b)) < self.hparams.gt_threshold).float()
        compute = {
            "gt": lambda: gt_loss(fake_b, batch["a_gt"], batch["has_gt"], threshold=self.hparams.gt_threshold)
            + gt_loss(rec_b, b_mask, threshold=self.hparams.gt_threshold),
            "colorvar": lambda: colorvar_loss(fake_b, real_a) + colorvar_loss(rec_b, real_b),
            "hsv": lambda: hsv_loss(fake_b, real_b, HSV_BINS) + hsv_loss(rec_b, real_b, HSV_BINS),
        }
        terms = {}
        for name in LOSS_NAMES:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.weights[name] > 0):
                terms[name] = compute[name]()
        return terms

    def generator_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                          dict[str, torch.Tensor]]:
        """``(loss_G, logged terms, images)`` of one batch (the reference's ``backward_G``)."""
        hp = self.hparams
        real_a, real_b = batch["a"].float(), batch["b"].float()
        fake_b = self.generator_ab(real_a)
        rec_a = self.generator_ba(fake_b)
        fake_a = self.generator_ba(real_b)
        rec_b = self.generator_ab(fake_a)
        terms: dict[str, torch.Tensor] = {}
        if hp.lambda_identity > 0:
            idt_ab = F.l1_loss(self.generator_ab(luminance(to_unit(real_b)) * 2 - 1), real_b)
            idt_ba = F.l1_loss(self.generator_ba(real_a.expand(-1, 3, -1, -1)), real_a)
            terms["idt"] = idt_ab * hp.lambda_b * hp.lambda_identity + idt_ba * hp.lambda_a * hp.lambda_identity
        d_a, d_b = self.discriminator_a(fake_a), self.discriminator_b(fake_b)
        terms["gan"] = F.mse_loss(d_b, torch.ones_like(d_b)) + F.mse_loss(d_a, torch.ones_like(d_a))
        terms["cycle"] = F.l1_loss(rec_a, real_a) * hp.lambda_a + F.l1_loss(rec_b, real_b) * hp.lambda_b
        extra = self.colorization_terms(fake_b, rec_b, batch)
        loss = sum(terms.values()) + sum(self.weights[k] * v for k, v in extra.items() if self.weights[k] > 0)
        return loss, {**terms, **extra}, {"fake_a": fake_a, "fake_b": fake_b, "rec_a": rec_a}

    @staticmethod
    def _lsgan_d(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        pred_real, pred_fake = disc(real), disc(fake.detach())
        return 0.5 * (F.mse_loss(pred_real, torch.ones_like(pred_real))
                      + F.mse_loss(pred_fake, torch.zeros_like(pred_fake)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        if batch["b"].shape[1] != 3 or batch["a"].shape[1] != 1:
            raise ValueError(f"CycleGAN colorization takes 1-channel A and 3-channel B images, got "
                             f"{batch['a'].shape[1]} and {batch['b'].shape[1]}")
        self.toggle_optimizer(opt_g)  # the discriminators need no gradients in the generators' step
        loss_g, terms, images = self.generator_losses(batch)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        loss_d_b = self._lsgan_d(self.discriminator_b, batch["b"].float(), self.pool_b.query(images["fake_b"]))
        loss_d_a = self._lsgan_d(self.discriminator_a, batch["a"].float(), self.pool_a.query(images["fake_a"]))
        opt_d.zero_grad()
        self.manual_backward(loss_d_a + loss_d_b)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        if self._shown is None:
            self._shown = {k: batch[k][:4].detach() for k in ("a", "a_gt")}
        logged = {"g_loss": loss_g.detach(), "d_loss": (loss_d_a + loss_d_b).detach(),
                  **{k: v.detach() for k, v in terms.items()}}
        self.log_dict(logged, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch["a"].shape[0])

    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, 0.999)
        opt_g = torch.optim.Adam([*self.generator_ab.parameters(), *self.generator_ba.parameters()], lr=hp.lr,
                                 betas=betas)
        opt_d = torch.optim.Adam([*self.discriminator_a.parameters(), *self.discriminator_b.parameters()], lr=hp.lr,
                                 betas=betas)
        total = int(self.trainer.max_epochs) if self._trainer is not None and self.trainer.max_epochs else 200
        decay = hp.decay_epochs if hp.decay_epochs is not None else total // 2
        rule = linear_decay(max(0, total - decay), decay)
        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in (opt_g, opt_d)]

    # -- validation: GT Dice, structure SSIM, HSV correlation and texture FD on held-out data ------

    def on_validation_epoch_start(self) -> None:
        self._val = {"dice": [], "ssim": [], "hist_fake": [], "hist_real": [], "tex_fake": [], "tex_real": []}

    def _texture(self, images: torch.Tensor) -> np.ndarray:
        describe = import_object(TEXTURE_FEATURES, "texture features")
        grey = luminance(to_unit(images.float())).clamp(0, 1)[:, 0].cpu().numpy()
        return np.stack([describe(g) for g in grey])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        real_a, real_b = batch["a"].float(), batch["b"].float()
        fake_b = self.generator_ab(real_a)
        if batch_idx == 0:
            self._shown = {"a": real_a[:4], "a_gt": batch["a_gt"][:4]}
        has = batch["has_gt"] > 0.5
        self._val["dice"].append(dice_score(fake_b[has], batch["a_gt"][has], self.hparams.gt_threshold))
        self._val["ssim"].append(ssim(luminance(to_unit(fake_b)), to_unit(real_a)))
        self._val["hist_fake"].append(hsv_histogram(to_unit(fake_b)).sum(0))
        self._val["hist_real"].append(hsv_histogram(to_unit(real_b)).sum(0))
        self._val["tex_fake"].append(self._texture(fake_b))
        self._val["tex_real"].append(self._texture(real_b))

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("ssim"):
            return
        v = self._val
        dice = torch.cat(v["dice"])
        metrics = {"val_ssim": torch.cat(v["ssim"]).mean()}
        if dice.numel():
            metrics["val_dice"] = dice.mean()
        hist_fake, hist_real = (self.all_gather(torch.stack(v[k]).sum(0)).reshape(-1, v[k][0].numel()).sum(0)
                                for k in ("hist_fake", "hist_real"))
        metrics["val_hsv"] = histogram_correlation(hist_fake[None], hist_real[None])[0]
        feats = [self.all_gather(torch.from_numpy(np.concatenate(v[k])).to(self.device)) for k in ("tex_fake",
                                                                                                "tex_real")]
        fake, real = (f.reshape(-1, f.shape[-1]).cpu().numpy().astype(np.float64) for f in feats)
        stats = import_object(GAUSSIAN_STATS, "gaussian stats")
        metrics["val_fd"] = float(import_object(FRECHET, "Fréchet distance")(*stats(real), *stats(fake)))
        self.log_dict({k: float(x) for k, x in metrics.items()}, on_step=False, on_epoch=True, sync_dist=True)

    # -- epoch end: schedules, pictures, snapshots ------------------------------------------------

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()
        epoch = self.current_epoch + 1
        if self.trainer.is_global_zero:
            self._log_images(epoch)
            every = self.hparams.snapshot_every
            if every and (epoch % every == 0 or epoch >= (self.trainer.max_epochs or epoch)):
                self.write_snapshot(Path(self.trainer.default_root_dir) / EPOCHS_DIR / f"epoch_{epoch:04d}", epoch)
        self._shown = None

    @torch.no_grad()
    def _log_images(self, epoch: int) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if self._shown is None or not hasattr(experiment, "add_image"):
            return
        fake_b = self.generator_ab(self._shown["a"].float())
        rows = image_rows(self._shown["a"].float(), fake_b, self.generator_ba(fake_b), self._shown["a_gt"])
        experiment.add_image("samples/A_fakeB_recA_GT", rows.cpu(), global_step=epoch)

    def write_snapshot(self, directory: Path, epoch: int) -> Path:
        """The four components as an artifact of this epoch (rank 0)."""
        from microforge.trainers.export import export_artifact

        from .workload import CYCLEGAN

        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()} if self._trainer else {}
        return export_artifact(self, directory, workload=CYCLEGAN, metrics=metrics,
                               provenance={"epoch": epoch, "hyper_parameters": dict(self.hparams)})

    # -- checkpoint state beyond the weights, and export ------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["image_pools"] = {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pools = checkpoint.get("image_pools")
        if pools:
            self.pool_a.load_state_dict(pools["a"])
            self.pool_b.load_state_dict(pools["b"])

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"generator_ab": self.generator_ab, "generator_ba": self.generator_ba,
                "discriminator_a": self.discriminator_a, "discriminator_b": self.discriminator_b}

    def export_preprocessing(self) -> dict[str, Any]:
        hp = self.hparams
        return {"image_size": hp.size, "size_multiple": 4, "input": "grayscale (1 channel), domain A",
                "invert_input": bool(hp.invert_a), "output": "RGB in [-1, 1] (generator_ab)",
                "gt_threshold": hp.gt_threshold}
