"""Generator artifacts in a replica: images from seeds with
:func:`microforge.trainers.predict.generate_images` (the same function as offline generation),
so an image is a function of (artifact, seed, truncation, bits) only.

:func:`load_generator` chooses how an artifact samples from what its card declares: the diffusion
sampler it names (:mod:`microforge.serve.diffusion`), else a latent generator (a GAN)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .discovery import ModelError, ServedArtifact, load_served_artifact, resolve_artifact

if TYPE_CHECKING:
    from .diffusion import DiffusionNet

GENERATOR_COMPONENTS = ("generator_ema", "generator")  # as `microforge generate` chooses
DTYPES = {8: np.uint8, 16: np.uint16}


def check_image_bytes(count: int, image_shape: Sequence[int], bits: int, cap: int) -> None:
    """413 when ``count`` images of ``image_shape`` (H, W, C) hold more than ``cap`` bytes (raw samples)."""
    height, width, channels = image_shape
    each = height * width * channels * bits // 8
    if count * each > cap:
        raise ModelError(f"{count} {bits}-bit images of {width}x{height}x{channels} are {count * each} bytes; "
                         f"at most {max(1, cap // each)} such images per request (limits.max_generate_bytes)",
                         status=413)


class GeneratorNet(ServedArtifact):
    """A generator artifact ready to render images from seeds."""

    sampler = "latent"
    image_shape: tuple[int, int, int] = (0, 0, 0)  # (H, W, C) of one image, measured at load

    @property
    def module(self) -> Any:
        """``generator_ema``, else ``generator``, else the artifact's only component."""
        components = self.artifact.components
        for name in GENERATOR_COMPONENTS:
            if name in components:
                return components[name]
        return self.component(GENERATOR_COMPONENTS[-1])

    @property
    def info(self) -> dict[str, Any]:
        return {**self.describe(self.module, "generator", "generate"),
                "latent_shape": list(getattr(self.module, "latent_shape", ()) or ()),
                "image_shape": list(self.image_shape)}

    def generate(self, seeds: Sequence[int], truncation: float | None = None, bits: int = 8) -> list[np.ndarray]:
        """uint8 (``bits=8``) or uint16 (``bits=16``, through the artifact's inverse transform)
        images, (H, W) or (H, W, C) (channels as the generator orders them), one per seed."""
        from microforge.platform.errors import ConfigError
        from microforge.trainers.predict import generate_images

        try:
            return generate_images(self.module, self.artifact.transform, list(seeds), dtype=DTYPES[bits],
                                   truncation=truncation)
        except ConfigError as exc:
            raise ModelError(f"model '{self.model_id}': {exc}") from None

    def check_size(self, count: int, bits: int, cap: int) -> None:
        """413 when ``count`` images of this model hold more than ``cap`` bytes (raw samples)."""
        check_image_bytes(count, self.image_shape, bits, cap)


def load_generator(models_dir: str | Path, model_id: str) -> "GeneratorNet | DiffusionNet":
    """Load a generator artifact from the models directory (on the GPU when the replica has one):
    a :class:`~microforge.serve.diffusion.DiffusionNet` when its card declares a diffusion sampler
    that accepts it, else a :class:`GeneratorNet`, which renders one image (seed 0) to measure its
    shape.

    Raises:
        ModelError: the folder is not a generator artifact, does not load, has no
            ``latent_shape``, makes images PNG cannot hold, or declares a sampler that refuses it.
    """
    from microforge.platform.artifact import ArtifactError, read_card

    from .diffusion import diffusion_sampler, load_diffusion

    folder = resolve_artifact(models_dir, model_id, "generate")
    try:
        card = read_card(folder)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None
    sampler = diffusion_sampler(model_id, card, folder)
    if sampler is not None:
        return load_diffusion(model_id, folder, card, sampler)
    net = GeneratorNet(model_id, *load_served_artifact(models_dir, model_id, "generate"))
    if getattr(net.module, "latent_shape", None) is None:
        raise ModelError(f"model '{model_id}': component {type(net.module).__name__} has no latent_shape: "
                         "it is not a generator")
    image = net.generate([0])[0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ModelError(f"model '{model_id}' makes {image.shape[2]}-channel images; PNG holds 1, 3 or 4")
    net.image_shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]) if image.ndim == 3 else 1)
    return net
