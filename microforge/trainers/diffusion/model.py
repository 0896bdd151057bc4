"""The class-conditional DDPM: a diffusers ``UNet2DModel`` built from a few named settings, the
noise schedulers, and classifier-free guided sampling.

Labels are the 16 embryo phases (``PHASE_INDEX``) plus :data:`NULL_CLASS`, the "no phase" label
that training substitutes with probability ``label_dropout`` and that guidance contrasts with.
Plain torch and diffusers: nothing here imports Ray or Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from microforge.platform.config import suggest
from microforge.platform.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["NULL_CLASS", "NUM_CLASS_EMBEDS", "RESOLUTIONS", "SCHEDULERS", "SIZES", "guided_denoise", "guided_sample",
           "make_scheduler", "train_scheduler_config", "unet_config"]

NUM_PHASES = 16
NULL_CLASS = NUM_PHASES  # the label of "any phase": dropped-out labels in training, the unconditional branch of CFG
NUM_CLASS_EMBEDS = NUM_PHASES + 1
RESOLUTIONS = (32, 64, 128, 256)
# size -> (base width, ResNet layers per block)
SIZES = {"tiny": (32, 1), "small": (64, 2), "base": (128, 2)}
# Channel multipliers per level; a resolution uses enough levels to reach 8 x 8 at the bottom.
_MULTS = (1, 2, 2, 4, 4, 4)
# diffusers scheduler classes by the names the CLI takes (all read DDPM's training schedule).
SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler"}


def unet_config(resolution: int, size: str = "small", *, width: int | None = None, levels: int | None = None,
                layers_per_block: int | None = None, attention_below: int = 16) -> dict[str, Any]:
    """The ``UNet2DModel`` config (its constructor arguments) of a 1-channel class-conditional DDPM.

    ``width`` and ``levels`` override the size's base width and the resolution's number of levels
    (small CPU runs); self-attention is used at the levels whose side is ``<= attention_below``.

    Raises:
        ConfigError: an unknown size or resolution, or levels the resolution cannot take.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown DDPM size '{size}'{suggest(size, list(SIZES))}; valid: {', '.join(SIZES)}")
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {resolution}")
    base, layers = SIZES[size]
    base = width or base
    levels = levels or RESOLUTIONS.index(resolution) + 3
    if not 1 <= levels <= len(_MULTS) or resolution >> (levels - 1) < 4:
        raise ConfigError(f"a {resolution} px DDPM takes 1 to {min(len(_MULTS), resolution.bit_length() - 2)} levels, "
                          f"got {levels}")
    sides = [resolution >> i for i in range(levels)]
    attention = [side <= attention_below for side in sides]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    return {
        "sample_size": resolution, "in_channels": 1, "out_channels": 1,
        "block_out_channels": [base * m for m in _MULTS[:levels]],
        "layers_per_block": layers_per_block or layers,
        "down_block_types": list(down),
        "up_block_types": [d.replace("Down", "Up") for d in reversed(down)],
        "norm_num_groups": min(32, base),  # every level's channels are a multiple of base
        "num_class_embeds": NUM_CLASS_EMBEDS,
    }


def train_scheduler_config(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> dict[str, Any]:
    """The DDPM noise schedule of training (recorded in the artifact; samplers are built from it)."""
    return {"num_train_timesteps": num_train_timesteps, "beta_schedule": beta_schedule, "beta_start": 1e-4,
            "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True, "clip_sample_range": 1.0}


def make_scheduler(kind: str, config: dict[str, Any]) -> Any:
    """A diffusers scheduler ``ddpm``, ``ddim`` or ``dpm`` (DPM-Solver++) for the training schedule ``config``.

    Raises:
        ConfigError: an unknown kind.
    """
    import diffusers

    if kind not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{kind}'{suggest(kind, list(SCHEDULERS))}; valid: {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[kind])
    # from_config keeps the keys a scheduler knows and ignores the others (DPM has no clip_sample).
    return cls.from_config(dict(config))


def guided_denoise(predict: Callable[["torch.Tensor", Any], "torch.Tensor"], scheduler: Any, x: "torch.Tensor",
                   generators: Sequence["torch.Generator"], *, steps: int, guidance: float) -> "torch.Tensor":
    """The classifier-free guided sampling loop every microforge diffusion model runs.

    ``x``: the initial noise ``(B, ...)``; ``predict(model_in, t)`` gets ``(2B, ...)`` inputs whose
    first half is conditional and second half unconditional (one forward pass for both) and returns
    the model output. ``guidance`` 1 is plain conditional sampling, 0 unconditional. Stochastic
    scheduler steps draw image ``i``'s noise from ``generators[i]`` (CPU generators, as diffusers allows).
    """
    import torch

    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            out_cond, out_null = predict(model_in, t).chunk(2)
            out = out_null + guidance * (out_cond - out_null)
            x = scheduler.step(out, t, x, generator=list(generators)).prev_sample
    return x


def guided_sample(unet: Any, scheduler: Any, labels: Sequence[int], seeds: Sequence[int], *, steps: int,
                  guidance: float) -> "torch.Tensor":
    """``(B, 1, H, W)`` images in [-1, 1] of the phase indices ``labels`` with classifier-free guidance.

    Image ``i`` is a function of ``seeds[i]`` (its own generator draws its initial noise and every
    stochastic scheduler step), its label and the batch it is computed in; ``guidance`` 1 is plain
    conditional sampling, 0 unconditional. The conditional and null branches run as one batch.
    """
    import torch

    device = next(unet.parameters()).device
    side = int(unet.config.sample_size)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(1, side, side, generator=g) for g in generators]).to(device)
    cond = torch.as_tensor(list(labels), dtype=torch.long, device=device)
    both = torch.cat([cond, torch.full_like(cond, NULL_CLASS)])
    x = guided_denoise(lambda model_in, t: unet(model_in, t, class_labels=both).sample, scheduler, x, generators,
                       steps=steps, guidance=guidance)
    return x.clamp(-1, 1)
