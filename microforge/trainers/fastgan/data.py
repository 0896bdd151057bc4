"""FastGAN training data rendered on the fly: CARS tissue images through the workload's transform."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

__all__ = ["TRANSFORM", "render_cars_batch"]

# The input transform of the fastgan workload: integers by their dtype's maximum, to [-1, 1].
TRANSFORM = {"name": "signed_unit", "params": {}}


def render_cars_batch(config: dict[str, Any], seed: int, indices: Iterable[int], *,
                      transform: dict[str, Any] = TRANSFORM) -> dict[str, np.ndarray]:
    """``{"image": (B, 1, H, W) float32, "index": (B,)}``: 16-bit CARS renders through ``transform``
    (the transform the artifact records, so training sees what generation inverts)."""
    from microforge.datasets.cars import CarsConfig, render_cars
    from microforge.platform.transforms import transform_from_spec

    cars = CarsConfig.load(config)
    scale = transform_from_spec(transform)
    indices = list(indices)
    images = [scale.apply(render_cars(cars, seed, int(i)).image)[None] for i in indices]
    return {"image": np.stack(images).astype(np.float32), "index": np.asarray(indices, dtype=np.int64)}
