"""DreamBooth fine-tuning (Ruiz et al. 2023) of a local Stable Diffusion pipeline, as a LightningModule.

As diffusers' ``examples/dreambooth/train_dreambooth.py``: each batch, the instance images (one
phase's frames, captioned with the phase's prompt) and as many class images (the class prompt,
drawn by the frozen pretrained pipeline) go through the frozen VAE to latents, get noise at a
uniform timestep, and the UNet predicts the noise (or velocity) from the text encoder's states of
their prompts; the loss is the instance MSE plus ``prior_weight`` times the class MSE (the
prediction split with ``chunk(2)``). The UNet trains; the text encoder only with
``train_text_encoder``; AdamW (0.9, 0.999, weight decay 1e-2) at a constant learning rate.

Checkpoints leave out the frozen parts (they are the pretrained pipeline's, read again on load),
and the artifact holds the fine-tuned pipeline in diffusers' format (``diffusers/``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from microforge.trainers.lightning_import import pl

from .class_images import CLASS_DIR, ClassImageSpec, generate_chunks, load_class_images, missing_chunks, write_record
from .lightning import to_model_images
from .pipeline import PipelineParts, encode_prompts, load_pipeline_parts, pipeline_fingerprint, save_pipeline
from .sampling import PIPELINE_DIR, PipelineSampler, sampler_path

__all__ = ["CLASS_RECORD", "DreamBoothModule"]

log = logging.getLogger(__name__)

CLASS_RECORD = "class_images.json"  # in the run directory: where this run's class images came from


class DreamBoothModule(pl.LightningModule):
    """DreamBooth with optional prior preservation on the pipeline directory ``pretrained``.

    Args:
        pretrained: a checked local pipeline directory (:func:`~.pipeline.check_pipeline_dir`).
        phase: the phase of the instance images; instance_prompt, class_prompt: their prompts
            (both from the one template, ``prompt_template``).
        resolution: image side in pixels (instance and class images are resized to it).
        lr, weight_decay: AdamW; train_text_encoder: train the text encoder too.
        prior_preservation, class_images, prior_weight: the class-image loss, how many class
            images, and its weight.
        class_steps, class_guidance, class_scheduler, class_batch_size, class_seed: how the class
            images are drawn; class_dir: their cache (default ``<runs dir>/class-images``).
    """

    def __init__(self, pretrained: str, phase: str, instance_prompt: str, class_prompt: str, prompt_template: str,
                 resolution: int = 512, lr: float = 7e-6, weight_decay: float = 1e-2, train_text_encoder: bool = False,
                 prior_preservation: bool = False, class_images: int = 200, prior_weight: float = 1.0,
                 class_steps: int = 50, class_guidance: float = 7.5, class_scheduler: str = "dpm",
                 class_batch_size: int = 4, class_seed: int = 0, class_dir: str | None = None) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        self.save_hyperparameters()
        parts = load_pipeline_parts(pretrained)
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer, self.scheduler_config = parts.tokenizer, parts.scheduler_config
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(train_text_encoder)
        # Training noise follows the pipeline's schedule whatever its sampler (as diffusers' example).
        self.noise = DDPMScheduler.from_config(self.scheduler_config)
        self.class_pixels: torch.Tensor | None = None  # (count, side, side) uint8, filled in setup()
        self._states: dict[str, torch.Tensor] = {}  # frozen text encoder: prompt -> states, computed once

    def parts(self) -> PipelineParts:
        return PipelineParts(self.unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler_config)

    def example_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        side = self.hparams.resolution
        return {"image": torch.rand(batch_size, side, side) * 2 - 1, "phase_index": torch.zeros(batch_size).long()}

    # -- class images ------------------------------------------------------------------------------

    def class_spec(self) -> ClassImageSpec:
        hp = self.hparams
        return ClassImageSpec(pipeline_fingerprint(hp.pretrained), hp.class_prompt, hp.class_images, hp.resolution,
                              hp.class_steps, float(hp.class_guidance), hp.class_scheduler, hp.class_seed,
                              hp.class_batch_size)

    def setup(self, stage: str) -> None:
        """Draw the class images that the cache lacks, the chunks shared among the ranks, then
        read them all. Lightning calls this before it restores a checkpoint, so the UNet here is
        still the pretrained one, also when a run resumes."""
        if stage != "fit" or not self.hparams.prior_preservation:
            return
        trainer, spec = self.trainer, self.class_spec()
        runs_dir = Path(trainer.default_root_dir).parent
        directory = Path(self.hparams.class_dir or runs_dir / CLASS_DIR) / spec.key()
        todo = missing_chunks(directory, spec)
        trainer.strategy.barrier("dreambooth-class-images-listed")  # every rank saw the same missing chunks
        mine = todo[trainer.global_rank::trainer.world_size]
        if mine:
            log.info("rank %d: drawing %d class image chunk(s) of '%s' into %s", trainer.global_rank, len(mine),
                     spec.prompt, directory)
            device = trainer.strategy.root_device
            for module in (self.unet, self.vae, self.text_encoder):
                module.to(device).eval()
            generate_chunks(self.parts(), spec, directory, mine)
        trainer.strategy.barrier("dreambooth-class-images-drawn")
        if trainer.is_global_zero:
            if todo:
                write_record(directory, spec, self.hparams.pretrained)
            drawn = sum(len(spec.chunks()[c]) for c in todo)
            (Path(trainer.default_root_dir) / CLASS_RECORD).write_text(json.dumps(
                {"directory": str(directory), "key": spec.key(), "prompt": spec.prompt, "count": spec.count,
                 "generated": drawn, "reused": spec.count - drawn}, indent=2) + "\n")
        self.class_pixels = torch.from_numpy(load_class_images(directory, spec))

    def _class_batch(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` class images in [-1, 1], ``(n, 1, side, side)``: a fixed walk through the set by
        step and rank, so a resumed run continues it."""
        assert self.class_pixels is not None, "prior preservation needs the class images of setup()"
        count = self.class_pixels.shape[0]
        start = (self.global_step * self.trainer.world_size + self.trainer.global_rank) * n
        rows = torch.tensor([(start + j) % count for j in range(n)])
        return (self.class_pixels[rows].to(device).float() / 127.5 - 1)[:, None]

    # -- training ----------------------------------------------------------------------------------

    def _prompt_states(self, prompts: list[str]) -> torch.Tensor:
        if self.hparams.train_text_encoder:
            return encode_prompts(self.tokenizer, self.text_encoder, prompts)
        for prompt in set(prompts) - set(self._states):
            with torch.no_grad():
                self._states[prompt] = encode_prompts(self.tokenizer, self.text_encoder, [prompt])
        return torch.cat([self._states[p] for p in prompts])

    def on_train_epoch_start(self) -> None:
        self.vae.eval()  # frozen parts stay in eval mode (Lightning puts the whole module in train mode)
        if not self.hparams.train_text_encoder:
            self.text_encoder.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        x = to_model_images(batch["image"], hp.resolution)
        n = x.shape[0]
        prompts = [hp.instance_prompt] * n
        if hp.prior_preservation:  # instance and class images in one batch, split again below
            x = torch.cat([x, self._class_batch(n, x.device)])
            prompts += [hp.class_prompt] * n
        pixels = x.expand(-1, int(self.vae.config.in_channels), -1, -1)  # gray frames as RGB
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, int(self.noise.config.num_train_timesteps), (latents.shape[0],), device=latents.device)
        noisy = self.noise.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=self._prompt_states(prompts)).sample.float()
        target = noise if self.noise.config.prediction_type == "epsilon" else self.noise.get_velocity(latents, noise, t)
        target = target.float()
        if hp.prior_preservation:
            (pred, pred_prior), (target, target_prior) = pred.chunk(2), target.chunk(2)
            instance, prior = F.mse_loss(pred, target), F.mse_loss(pred_prior, target_prior)
            loss = instance + hp.prior_weight * prior
            self.log("prior_loss", prior.detach(), on_step=True, on_epoch=True, sync_dist=True, batch_size=n)
        else:
            loss = instance = F.mse_loss(pred, target)
        self.log("instance_loss", instance.detach(), on_step=True, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("loss", loss.detach(), on_step=True, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.unet.parameters())
        if self.hparams.train_text_encoder:
            params += list(self.text_encoder.parameters())
        return torch.optim.AdamW(params, lr=self.hparams.lr, betas=(0.9, 0.999), weight_decay=self.hparams.weight_decay,
                                 eps=1e-8)

    # -- checkpoints: the frozen parts are the pretrained pipeline's -------------------------------------

    def _frozen(self) -> tuple[str, ...]:
        return ("vae.",) if self.hparams.train_text_encoder else ("vae.", "text_encoder.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(self._frozen())]:
            del state[key]

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        frozen = {k: v for k, v in self.state_dict().items() if k.startswith(self._frozen()) and k not in state_dict}
        return super().load_state_dict({**frozen, **state_dict}, strict=strict, assign=assign)

    # -- export ------------------------------------------------------------------------------------

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet}

    def export_preprocessing(self) -> dict[str, Any]:
        hp = self.hparams
        return {"image_size": hp.resolution, "channels": 1, "output": "images in [-1, 1] (the mean of the VAE's RGB)",
                "classes": [hp.phase], "prompt_template": hp.prompt_template, "instance_prompt": hp.instance_prompt,
                "class_prompt": hp.class_prompt, "prior_preservation": hp.prior_preservation,
                "class_images": hp.class_images if hp.prior_preservation else 0, "prior_weight": hp.prior_weight,
                "train_text_encoder": hp.train_text_encoder, "pretrained": hp.pretrained,
                "scheduler": dict(self.scheduler_config), "sampler": sampler_path(PipelineSampler),
                "diffusers": f"{PIPELINE_DIR}/ (the fine-tuned StableDiffusionPipeline; component unet is its UNet)"}

    def export_files(self, directory: Path) -> None:
        """The fine-tuned pipeline in diffusers' own layout: ``StableDiffusionPipeline.from_pretrained(
        artifact / "diffusers")`` loads it with nothing else."""
        save_pipeline(self.parts(), Path(directory) / PIPELINE_DIR)
