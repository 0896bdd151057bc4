"""What ``microforge generate diffusion`` runs for an artifact: its *sampler*.

A diffusion artifact names its sampler class by import path in ``preprocessing["sampler"]`` (as
components name their classes), so generation holds no workload-specific branch:

* :class:`ClassLabelSampler`: a class-conditional ``UNet2DModel`` (``ddpm``); the phase is a label,
  guidance contrasts it with the null class.
* :class:`PipelineSampler`: a Stable Diffusion pipeline in the artifact's ``diffusers/`` folder
  (``dreambooth``); the phase becomes the prompt of the artifact's template, guidance contrasts
  it with the empty prompt, and the VAE decodes the latents.

Both run :func:`~microforge.trainers.diffusion.model.guided_denoise` with one generator per image,
so image ``i`` is a function of its seed, its phase and its batch. :func:`prompt_sample` is also
how DreamBooth draws its class images from the frozen pretrained pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from microforge.platform.errors import ConfigError
from microforge.platform.imports import import_object, object_path

if TYPE_CHECKING:
    import torch

    from microforge.platform.artifact import ArtifactCard

    from .pipeline import PipelineParts

__all__ = ["ClassLabelSampler", "DiffusionSampler", "PIPELINE_DIR", "PipelineSampler", "prompt_sample", "sampler_for",
           "sampler_path"]

PIPELINE_DIR = "diffusers"  # the artifact's folder in diffusers' own format


def prompt_sample(parts: "PipelineParts", scheduler: Any, prompts: Sequence[str], seeds: Sequence[int], *, side: int,
                  steps: int, guidance: float, negative: str = "") -> "torch.Tensor":
    """``(B, 1, side, side)`` gray images in [-1, 1] of ``prompts`` from a Stable Diffusion
    pipeline's parts, with classifier-free guidance against ``negative``; image ``i``'s initial
    latents and stochastic steps come from a generator seeded with ``seeds[i]``.

    Raises:
        ConfigError: ``side`` is not a multiple of the VAE's scale factor.
    """
    import torch

    from .model import guided_denoise
    from .pipeline import encode_prompts, vae_scale_factor

    factor = vae_scale_factor(parts.vae)
    if side % factor:
        raise ConfigError(f"image side {side} is not a multiple of the VAE's scale factor {factor}")
    device = next(parts.unet.parameters()).device
    shape = (int(parts.unet.config.in_channels), side // factor, side // factor)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
    with torch.no_grad():
        states = encode_prompts(parts.tokenizer, parts.text_encoder, [*prompts, *[negative] * len(prompts)])
    latents = guided_denoise(lambda model_in, t: parts.unet(model_in, t, encoder_hidden_states=states).sample,
                             scheduler, x, generators, steps=steps, guidance=guidance)
    with torch.no_grad():
        images = parts.vae.decode(latents / parts.vae.config.scaling_factor).sample
    # Embryo frames are gray: the channels' mean is the one channel every microforge image set has.
    return images.float().mean(1, keepdim=True).clamp(-1, 1)


class DiffusionSampler:
    """Base of the samplers an artifact declares (see the module doc).

    Attributes:
        components: the card components it can run, preferred first (``--component``).
        transform: the artifact's transform (generated values in [-1, 1] -> uint8).
    """

    components: tuple[str, ...] = ()

    @classmethod
    def refuses(cls, card: "ArtifactCard", directory: Path) -> str | None:
        """Why this sampler cannot run the artifact (None: it can)."""
        raise NotImplementedError

    @classmethod
    def phases(cls, card: "ArtifactCard") -> list[str]:
        """The phases it generates (what ``--phase all`` means), in development order."""
        raise NotImplementedError

    @classmethod
    def prompts(cls, card: "ArtifactCard", phases: Sequence[str]) -> dict[str, str] | None:
        """The prompt of each phase (recorded in metadata.json), or None for a label-conditioned model."""
        return None

    def __init__(self, artifact: str | Path, component: str, scheduler: str, use_gpu: bool = False) -> None:
        raise NotImplementedError

    def sample(self, phases: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float) -> "torch.Tensor":
        """``(B, 1, H, W)`` images in [-1, 1], image ``i`` of ``phases[i]`` from ``seeds[i]``."""
        raise NotImplementedError


class ClassLabelSampler(DiffusionSampler):
    """A class-conditional DDPM: ``unet_ema`` (or ``unet``) with the phase index as class label."""

    components = ("unet_ema", "unet")

    @classmethod
    def refuses(cls, card: "ArtifactCard", directory: Path) -> str | None:
        if not set(cls.components) & set(card.components) or "null_class" not in card.preprocessing:
            return "no class-conditional UNet with a null class"
        return None

    @classmethod
    def phases(cls, card: "ArtifactCard") -> list[str]:
        from microforge.datasets.embryo.layout import PHASES

        return list(PHASES)  # one label per phase, trained or not

    def __init__(self, artifact: str | Path, component: str, scheduler: str, use_gpu: bool = False) -> None:
        import torch

        from ..registry import load_artifact
        from .model import make_scheduler

        loaded = load_artifact(artifact)
        self.unet, self.transform = loaded[component], loaded.transform
        if getattr(getattr(self.unet, "config", None), "num_class_embeds", None) is None:
            raise ConfigError(f"component '{component}' of {artifact} is not a class-conditional UNet")
        if use_gpu and torch.cuda.is_available():
            self.unet.to("cuda")
        self.scheduler = make_scheduler(scheduler, loaded.preprocessing["scheduler"])

    def sample(self, phases: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float) -> "torch.Tensor":
        from microforge.datasets.embryo.layout import PHASE_INDEX

        from .model import guided_sample

        return guided_sample(self.unet, self.scheduler, [PHASE_INDEX[p] for p in phases], seeds, steps=steps,
                             guidance=guidance)


class PipelineSampler(DiffusionSampler):
    """A fine-tuned Stable Diffusion pipeline (``diffusers/`` beside the card): the phase's prompt
    from the artifact's template, its text encoder, UNet and VAE."""

    components = ("unet",)

    @classmethod
    def refuses(cls, card: "ArtifactCard", directory: Path) -> str | None:
        if not (directory / PIPELINE_DIR / "model_index.json").is_file():
            return f"no {PIPELINE_DIR}/model_index.json"
        if "{phase}" not in str(card.preprocessing.get("prompt_template")):
            return "no prompt template with {phase}"
        return None

    @classmethod
    def phases(cls, card: "ArtifactCard") -> list[str]:
        from microforge.datasets.embryo.layout import PHASES

        trained = set(card.preprocessing.get("classes") or [])
        return [p for p in PHASES if p in trained]  # fine-tuned on these; other prompts are the base model's

    @classmethod
    def prompts(cls, card: "ArtifactCard", phases: Sequence[str]) -> dict[str, str]:
        return {p: card.preprocessing["prompt_template"].format(phase=p) for p in phases}

    def __init__(self, artifact: str | Path, component: str, scheduler: str, use_gpu: bool = False) -> None:
        import torch

        from microforge.platform.artifact import read_card
        from microforge.platform.transforms import transform_from_spec

        from .model import make_scheduler
        from .pipeline import check_pipeline_dir, load_pipeline_parts

        self.card = read_card(artifact)
        self.transform = transform_from_spec(self.card.transform)
        self.parts = load_pipeline_parts(check_pipeline_dir(Path(artifact) / PIPELINE_DIR, "the artifact's pipeline"))
        if use_gpu and torch.cuda.is_available():
            for module in self.parts.modules():
                module.to("cuda")
        self.scheduler = make_scheduler(scheduler, self.parts.scheduler_config)
        self.side = int(self.card.preprocessing["image_size"])

    def sample(self, phases: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float) -> "torch.Tensor":
        prompts = self.prompts(self.card, phases)
        return prompt_sample(self.parts, self.scheduler, [prompts[p] for p in phases], seeds, side=self.side,
                             steps=steps, guidance=guidance)


def sampler_path(cls: type[DiffusionSampler]) -> str:
    """The import path an artifact records for ``cls``."""
    return object_path(cls)


def sampler_for(card: "ArtifactCard", directory: str | Path) -> tuple[type[DiffusionSampler] | None, str | None]:
    """The sampler class an artifact declares and, when it cannot run the artifact, why.

    Artifacts written before samplers were declared are class-conditional DDPMs (their own
    check refuses anything else, e.g. a GAN). Only :class:`DiffusionSampler` subclasses are
    accepted: an artifact names an installed class, never code of its own.
    """
    path = card.preprocessing.get("sampler")
    if path is None:
        cls: Any = ClassLabelSampler
    else:
        try:
            cls = import_object(str(path), "diffusion sampler")
        except ConfigError as exc:
            return None, str(exc)
        if not (isinstance(cls, type) and issubclass(cls, DiffusionSampler)):
            return None, f"its sampler {path} is not a microforge DiffusionSampler"
    return cls, cls.refuses(card, Path(directory))
