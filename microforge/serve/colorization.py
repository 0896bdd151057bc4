"""Colorization artifacts in a replica: gray or colour images through a CycleGAN's ``generator_ab``
with :func:`microforge.trainers.predict.colorize_images` (the same function as offline
colorization), reading ``invert_input`` and ``size_multiple`` from the card's preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .discovery import ModelError, ServedArtifact, load_served_artifact

COLORIZE_COMPONENT = "generator_ab"  # domain A (gray) -> domain B (RGB)


class ColorizerNet(ServedArtifact):
    """A colorization artifact (task ``colorize``) ready to translate gray images into RGB."""

    @property
    def module(self) -> Any:
        """``generator_ab``, or the artifact's only component."""
        return self.component(COLORIZE_COMPONENT)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.artifact.preprocessing

    @property
    def size_multiple(self) -> int:
        return int(self.preprocessing.get("size_multiple") or 1)

    @property
    def invert_input(self) -> bool:
        return bool(self.preprocessing.get("invert_input", False))

    @property
    def info(self) -> dict[str, Any]:
        return {**self.describe(self.module, "colorizer", "colorize"),
                "image_size": self.preprocessing.get("image_size"), "size_multiple": self.size_multiple,
                "invert_input": self.invert_input}

    def colorize(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 RGB ``(H, W, 3)`` of uint8/uint16 gray or BGR images (one forward pass per padded shape)."""
        from microforge.platform.errors import ConfigError
        from microforge.trainers.predict import colorize_images

        try:
            return colorize_images(self.module, self.artifact.transform, list(images),
                                   size_multiple=self.size_multiple, invert_input=self.invert_input)
        except ConfigError as exc:
            raise ModelError(f"model '{self.model_id}': {exc}") from None


def load_colorizer(models_dir: str | Path, model_id: str) -> ColorizerNet:
    """Load a colorization artifact from the models directory (on the GPU when the replica has
    one) and colorize one small image to check it makes RGB from gray.

    Raises:
        ModelError: the folder is not a colorize artifact, does not load, has no ``generator_ab``
            (with several components), or its generator does not map 1 channel to 3.
    """
    net = ColorizerNet(model_id, *load_served_artifact(models_dir, model_id, "colorize"))
    try:
        net.colorize([np.zeros((8, 8), np.uint8)])
    except RuntimeError as exc:  # torch: a generator that does not take one channel
        raise ModelError(f"model '{model_id}': {COLORIZE_COMPONENT} does not translate a 1-channel image "
                         f"({str(exc).splitlines()[0]})") from None
    return net
