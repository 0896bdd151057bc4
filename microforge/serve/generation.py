"""Generator artifacts in a replica: images from seeds with
:func:`microforge.trainers.predict.generate_images` (the same function as offline generation),
so an image is a function of (artifact, seed, truncation, bits) only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .discovery import ModelError, ServedArtifact, load_served_artifact

GENERATOR_COMPONENTS = ("generator_ema", "generator")  # as `microforge generate` chooses
DTYPES = {8: np.uint8, 16: np.uint16}


class GeneratorNet(ServedArtifact):
    """A generator artifact ready to render images from seeds."""

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
        height, width, channels = self.image_shape
        each = height * width * channels * bits // 8
        if count * each > cap:
            raise ModelError(f"{count} {bits}-bit images of {width}x{height}x{channels} are {count * each} bytes; "
                             f"at most {max(1, cap // each)} such images per request (limits.max_generate_bytes)",
                             status=413)


def load_generator(models_dir: str | Path, model_id: str) -> GeneratorNet:
    """Load a generator artifact from the models directory (on the GPU when the replica has one)
    and render one image (seed 0) to measure its shape.

    Raises:
        ModelError: the folder is not a generator artifact, does not load, has no
            ``latent_shape``, or makes images PNG cannot hold.
    """
    net = GeneratorNet(model_id, *load_served_artifact(models_dir, model_id, "generate"))
    if getattr(net.module, "latent_shape", None) is None:
        raise ModelError(f"model '{model_id}': component {type(net.module).__name__} has no latent_shape: "
                         "it is not a generator")
    image = net.generate([0])[0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ModelError(f"model '{model_id}' makes {image.shape[2]}-channel images; PNG holds 1, 3 or 4")
    net.image_shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]) if image.ndim == 3 else 1)
    return net
