"""Generator artifacts in a replica: images from seeds with
:func:`microforge.trainers.predict.generate_images` (the same function as offline generation),
so an image is a function of (artifact, seed) only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .discovery import ModelError, ServedArtifact, load_served_artifact

GENERATOR_COMPONENT = "generator"


class GeneratorNet(ServedArtifact):
    """A generator artifact ready to render images from seeds."""

    @property
    def module(self) -> Any:
        """The ``generator`` component, or the artifact's only component."""
        return self.component(GENERATOR_COMPONENT)

    @property
    def info(self) -> dict[str, Any]:
        return {**self.describe(self.module, "generator", "generate"),
                "latent_shape": list(getattr(self.module, "latent_shape", ()) or ())}

    def generate(self, seeds: Sequence[int]) -> list[np.ndarray]:
        """uint8 images, (H, W) or (H, W, C) (channels as the generator orders them), one per seed."""
        from microforge.platform.errors import ConfigError
        from microforge.trainers.predict import generate_images

        try:
            return generate_images(self.module, self.artifact.transform, list(seeds), dtype=np.uint8)
        except ConfigError as exc:
            raise ModelError(f"model '{self.model_id}': {exc}") from None


def load_generator(models_dir: str | Path, model_id: str) -> GeneratorNet:
    """Load a generator artifact from the models directory (on the GPU when the replica has one).

    Raises:
        ModelError: the folder is not a generator artifact or does not load.
    """
    net = GeneratorNet(model_id, *load_served_artifact(models_dir, model_id, "generate"))
    if getattr(net.module, "latent_shape", None) is None:
        raise ModelError(f"model '{model_id}': component {type(net.module).__name__} has no latent_shape")
    return net
