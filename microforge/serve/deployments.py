"""The model and renderer deployments behind the ingress.

Each receives the server settings (``ServeConfig.settings()``) at construction. Their methods
are plain ``def`` (Serve runs them in the replica's thread pool) except the batched predict,
which must be ``async`` and hands the tensor work to a thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from typing import Any

import numpy as np
from ray import serve

from .models import load_detector, load_segmentation, newest_segmentation_model, segmentation_outputs

log = logging.getLogger(__name__)

# Loaded models kept per replica (a small LRU: switching back and forth does not reload).
_MODEL_CACHE = 3


class _ModelCache:
    def __init__(self, loader) -> None:
        self.loader = loader
        self.items: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def get(self, model_id: str) -> Any:
        if model_id in self.items:
            self.items.move_to_end(model_id)
        else:
            self.items[model_id] = self.loader(model_id)
            while len(self.items) > _MODEL_CACHE:
                self.items.popitem(last=False)
        return self.items[model_id]


@serve.deployment
class SegmentationModel:
    """U-Net masks (and probability maps) with dynamic batching: concurrent requests share a
    forward pass (one per image shape)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.models_dir = settings["models_dir"]
        own = settings["deployments"]["SegmentationModel"]
        self.predict_batch.set_max_batch_size(own["max_batch_size"])
        self.predict_batch.set_batch_wait_timeout_s(own["batch_wait_timeout_s"])
        self.cache = _ModelCache(lambda model_id: load_segmentation(self.models_dir, model_id))
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._warm_up(settings.get("segmentation_model"))

    def _warm_up(self, model_id: str | None) -> None:
        """Load the default model and run one forward pass before this replica takes traffic, so
        a replica the autoscaler adds under load does not hold its first batch for the seconds
        that loading (and CUDA's start) take. A model that does not load is reported by the
        requests that name it, not here."""
        try:
            model_id = model_id or newest_segmentation_model(self.models_dir)
            if model_id is None:
                return
            self.cache.get(model_id).predict([np.zeros((64, 64), np.uint8)])
        except Exception as exc:  # noqa: BLE001 - warm-up is best effort
            log.warning("SegmentationModel: could not warm up model '%s': %s", model_id, exc)

    def _predict(self, items: list[tuple[str, np.ndarray, bool]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(items)
        by_model: dict[str, list[int]] = {}
        for i, (model_id, _, _) in enumerate(items):
            by_model.setdefault(model_id, []).append(i)
        for model_id, indices in by_model.items():
            start = time.perf_counter()
            net = self.cache.get(model_id)
            probs = net.predict([items[i][1] for i in indices])
            seconds = time.perf_counter() - start
            for i, prob in zip(indices, probs):
                results[i] = {**segmentation_outputs(prob, net.threshold, with_prob=items[i][2]),
                              "batch_size": len(items), "model_info": net.info, "infer_s": seconds}
        return results  # type: ignore[return-value]

    # Defaults only: __init__ applies the configured size and wait.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple[str, np.ndarray, bool]]) -> list[dict[str, Any]]:
        self.batch_sizes[len(items)] += 1
        return await asyncio.to_thread(self._predict, items)

    async def predict(self, model_id: str, image: np.ndarray, with_prob: bool = False) -> dict[str, Any]:
        """``{mask, prob, stats, batch_size, model_info, infer_s}`` (see
        :func:`~microforge.serve.models.segmentation_outputs`) for a gray (H, W) image, uint8 or
        float32 in [0, 1]; ``prob`` is None unless ``with_prob``."""
        return await self.predict_batch((model_id, image, with_prob))

    def describe(self, model_id: str) -> dict[str, Any]:
        """Load the model (raising if it cannot load) and describe it."""
        return self.cache.get(model_id).info

    def stats(self) -> dict[str, Any]:
        """Batch sizes this replica has run, for /health."""
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"batch_sizes": {str(k): v for k, v in sizes.items()}, "max_batch_seen": max(sizes, default=0),
                "loaded": list(self.cache.items)}


@serve.deployment
class Detector:
    """Oriented-box detection with the built-in detector, a plugin or a U-Net artifact."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.models_dir = settings["models_dir"]
        self.cache = _ModelCache(lambda model_id: load_detector(self.models_dir, model_id))

    def detect(self, model_id: str, image: np.ndarray) -> dict[str, Any]:
        """``{detections, model_info, infer_s}`` for a uint8/uint16 gray or BGR image."""
        start = time.perf_counter()
        detector = self.cache.get(model_id)
        detections = detector.infer(image)
        return {"detections": detections, "model_info": detector.info, "infer_s": time.perf_counter() - start}

    def describe(self, model_id: str) -> dict[str, Any]:
        return self.cache.get(model_id).info

    def loaded(self) -> list[str]:
        return list(self.cache.items)


def t_to_lambda(t: float) -> float:
    """Inverse of ``lambda_to_t`` on [0, 1]: ``lambda = 10 ** (2 t - 1)``."""
    return float(10.0 ** (2.0 * t - 1.0))


def render_preview(config: dict[str, Any], t: float, seed: int, quality: int, return_obbs: bool) -> dict[str, Any]:
    """Render one crystal image at growth stage ``t`` and encode it as a JPEG data URL.

    The renderer draws the stage from ``stage_lambda_range``; pinning that range to the single
    lambda of ``t`` renders exactly that stage.
    """
    from microforge.datasets.crystals import CrystalConfig, render_crystal

    from .images import jpeg_b64

    start = time.perf_counter()
    pinned = CrystalConfig.load({**config, "stage_lambda_range": (t_to_lambda(t),) * 2})
    sample = render_crystal(pinned, seed, 0)
    generated = time.perf_counter()
    image_b64 = jpeg_b64(sample.image, quality)
    done = time.perf_counter()
    height, width = sample.image.shape[:2]
    out: dict[str, Any] = {
        "image_b64": image_b64, "width": width, "height": height, "seed_used": seed, "t": float(sample.meta["t"]),
        "timings": {"generate_s": generated - start, "encode_s": done - generated, "total_s": done - start},
    }
    if return_obbs:
        out["obbs"] = [{"cx": b.cx, "cy": b.cy, "L": b.length, "W": b.width, "angle_deg": math.degrees(b.angle),
                        "angle": b.angle, "corners": [list(c) for c in b.corners]} for b in sample.boxes]
    return out


@serve.deployment
class CrystalRenderer:
    """Crystal previews from the pure renderer; bulk previews spread one row per call over replicas."""

    def preview(self, config: dict[str, Any], t: float, seed: int, quality: int, return_obbs: bool) -> dict[str, Any]:
        out = render_preview(config, t, seed, quality, return_obbs)
        out["replica"] = serve.get_replica_context().replica_id.unique_id
        return out
