"""Segmentation artifacts in a replica: load with the artifact's transform, predict with the
same function as eval (:func:`microforge.trainers.predict.segment_probabilities`).

The ingress sends gray images in their stored dtype (uint8 or uint16; float for rendered demo
images), never rescaled: the artifact's transform alone decides the model's input. A pixel is
foreground where its probability is strictly above ``sigmoid(threshold)`` (the card records the
threshold on logits), as in :func:`microforge.trainers.unet.evaluate.predict_masks`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .discovery import ModelError, ServedArtifact, load_served_artifact

PROB_FORMATS = ("u8", "f32")


class SegmentationNet(ServedArtifact):
    """A segmentation artifact ready to predict foreground probabilities."""

    @property
    def module(self) -> Any:
        """The ``model`` component, or the artifact's only component."""
        return self.component("model")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.artifact.preprocessing

    @property
    def size_multiple(self) -> int:
        return int(self.preprocessing.get("size_multiple") or getattr(self.module, "size_multiple", 1))

    @property
    def threshold(self) -> float:
        """Probability above which a pixel is foreground (the card's threshold is on logits)."""
        return 1.0 / (1.0 + math.exp(-float(self.preprocessing.get("threshold", 0.0))))

    @property
    def info(self) -> dict[str, Any]:
        return {**self.describe(self.module, "segmentation", "segment"),
                "image_size": self.preprocessing.get("image_size"), "threshold": self.threshold,
                "scale": self.preprocessing.get("scale")}

    def predict(self, images: list[np.ndarray], scales: list[float | None] | None = None) -> list[np.ndarray]:
        """Probabilities (float32 (H, W) in [0, 1], each the size of its image) of gray (H, W)
        images of any dtype the artifact's transform takes, resized to the model's training scale
        (the card's ``scale``) or by the given factor per image."""
        from microforge.platform.errors import ConfigError
        from microforge.trainers.predict import segment_probabilities

        try:
            return segment_probabilities(self.module, self.artifact.transform, images,
                                         size_multiple=self.size_multiple, preprocessing=self.preprocessing,
                                         scale=scales)
        except ConfigError as exc:
            raise ModelError(f"model '{self.model_id}': {exc}") from None


def segmentation_outputs(prob: np.ndarray, threshold: float, prob_format: str | None) -> dict[str, Any]:
    """What a prediction returns to the ingress: the binary mask (uint8 0/255, ``prob > threshold``),
    the probability map if asked (``u8``: quantised, what its PNG shows anyway; ``f32``: exact),
    and statistics from the full float map."""
    mask = prob > threshold
    if prob_format == "u8":
        prob_out: np.ndarray | None = np.clip(np.round(prob * 255.0), 0, 255).astype(np.uint8)
    elif prob_format == "f32":
        prob_out = prob.astype(np.float32)
    else:
        prob_out = None
    return {"mask": mask.astype(np.uint8) * 255, "prob": prob_out,
            "stats": {"height": int(prob.shape[0]), "width": int(prob.shape[1]),
                      "foreground_fraction": float(mask.mean()), "mean_prob": float(prob.mean()),
                      "max_prob": float(prob.max())}}


def load_segmentation(models_dir: str | Path, model_id: str) -> SegmentationNet:
    """Load a segmentation artifact from the models directory (on the GPU when the replica has one).

    Raises:
        ModelError: the folder is not a segmentation artifact or does not load.
    """
    return SegmentationNet(model_id, *load_served_artifact(models_dir, model_id, "segment"))
