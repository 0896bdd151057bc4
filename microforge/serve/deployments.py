"""The model and renderer deployments behind the ingress.

One per Serve task (see :mod:`microforge.serve.tasks`, which names these classes). Each
receives the server settings (``ServeConfig.settings()``) at construction. Their methods are
plain ``def`` (Serve runs them in the replica's thread pool) except the batched ones, which
must be ``async`` and hand the tensor work to a thread.
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

from microforge.datasets.embryo.layout import PHASES

from .colorization import load_colorizer
from .detection import load_detector
from .diffusion import CHUNK, DiffusionRequest, chunk_items, sample_items
from .discovery import ModelError, newest_model
from .generation import load_generator
from .segmentation import load_segmentation, segmentation_outputs

log = logging.getLogger(__name__)

# Loaded models kept per replica (a small LRU: switching back and forth does not reload).
_MODEL_CACHE = 3


class _ModelCache:
    def __init__(self, loader) -> None:
        self.loader = loader
        self.items: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def __contains__(self, model_id: str) -> bool:
        return model_id in self.items

    def get(self, model_id: str) -> Any:
        if model_id in self.items:
            self.items.move_to_end(model_id)
        else:
            self.items[model_id] = self.loader(model_id)
            while len(self.items) > _MODEL_CACHE:
                self.items.popitem(last=False)
        return self.items[model_id]


def _by_model(items: list[tuple]) -> dict[str, list[int]]:
    """Indices of a batch's items (``(model_id, ...)`` tuples) per model."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item[0], []).append(i)
    return groups


class _BatchedModels:
    """What the batching model deployments share: batch settings, the model cache, batch stats."""

    def _setup(self, settings: dict[str, Any], deployment: str, batch_method: Any, loader: Any) -> None:
        self.models_dir = settings["models_dir"]
        own = settings["deployments"][deployment]
        batch_method.set_max_batch_size(own["max_batch_size"])
        batch_method.set_batch_wait_timeout_s(own["batch_wait_timeout_s"])
        self.cache = _ModelCache(lambda model_id: loader(self.models_dir, model_id))
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    async def _load(self, model_id: str) -> None:
        """Load a model before its request joins a batch: one that does not load fails its own
        request, not the batch."""
        if model_id not in self.cache:
            await asyncio.to_thread(self.cache.get, model_id)

    def describe(self, model_id: str) -> dict[str, Any]:
        """Load the model (raising if it cannot load) and describe it."""
        return self.cache.get(model_id).info

    def stats(self) -> dict[str, Any]:
        """Batch sizes this replica has run and the models it holds, for /health."""
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"batch_sizes": {str(k): v for k, v in sizes.items()}, "max_batch_seen": max(sizes, default=0),
                "loaded": list(self.cache.items)}


@serve.deployment
class SegmentationModel(_BatchedModels):
    """Segmentation masks (and probability maps) with dynamic batching: concurrent requests share
    a forward pass (one per image shape)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._setup(settings, "SegmentationModel", self.predict_batch, load_segmentation)
        self._warm_up(settings.get("default_models", {}).get("segment"))

    def _warm_up(self, model_id: str | None) -> None:
        """Load the default model and run one forward pass before this replica takes traffic, so
        a replica the autoscaler adds under load does not hold its first batch for the seconds
        that loading (and CUDA's start) take. A model that does not load is reported by the
        requests that name it, not here."""
        try:
            model_id = model_id or newest_model(self.models_dir, "segment")
            if model_id is None:
                return
            self.cache.get(model_id).predict([np.zeros((64, 64), np.uint8)])
        except Exception as exc:  # noqa: BLE001 - warm-up is best effort
            log.warning("SegmentationModel: could not warm up model '%s': %s", model_id, exc)

    def _predict(self, items: list[tuple[str, np.ndarray, str | None, float | None]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(items)
        for model_id, indices in _by_model(items).items():
            start = time.perf_counter()
            net = self.cache.get(model_id)
            probs = net.predict([items[i][1] for i in indices], [items[i][3] for i in indices])
            seconds = time.perf_counter() - start
            for i, prob in zip(indices, probs):
                results[i] = {**segmentation_outputs(prob, net.threshold, items[i][2]),
                              "batch_size": len(items), "model_info": net.info, "infer_s": seconds}
        return results  # type: ignore[return-value]

    # Defaults only: __init__ applies the configured size and wait.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple[str, np.ndarray, str | None, float | None]]) -> list[dict[str, Any]]:
        self.batch_sizes[len(items)] += 1
        return await asyncio.to_thread(self._predict, items)

    async def predict(self, model_id: str, image: np.ndarray, prob: str | None = None,
                      scale: float | None = None) -> dict[str, Any]:
        """``{mask, prob, stats, batch_size, model_info, infer_s}`` (see
        :func:`~microforge.serve.segmentation.segmentation_outputs`) for a gray (H, W) image of
        any dtype the artifact's transform takes; ``prob`` (``u8``/``f32``) asks for the map;
        ``scale`` resizes the input by that factor instead of to the model's training scale."""
        await self._load(model_id)
        return await self.predict_batch((model_id, image, prob, scale))



@serve.deployment
class Detector:
    """Oriented-box detection with a detector artifact, the built-in detector, a plugin or a segmentation artifact."""

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

    def stats(self) -> dict[str, Any]:
        """Loaded models, for /health."""
        return {"loaded": list(self.cache.items)}


@serve.deployment
class GeneratorModel(_BatchedModels):
    """Images from seeds with dynamic batching that counts images: each seed of a request is one
    batch item, so a request for more images than ``max_batch_size`` spans several forward passes
    and concurrent requests' seeds share them (grouped by model, truncation and bit depth).

    Diffusion models (:mod:`microforge.serve.diffusion`) batch whole chunks instead: concurrent
    requests' chunks share a batched call of up to ``max_batch_size`` images, grouped by (model,
    steps, guidance, scheduler), each chunk sampled as offline generation samples it."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._setup(settings, "GeneratorModel", self.generate_batch, load_generator)
        self.max_bytes = int(settings["limits"]["max_generate_bytes"])
        # Diffusion batches count chunks (CHUNK images each): max_batch_size images, at least one chunk.
        own = settings["deployments"]["GeneratorModel"]
        self.sample_batch.set_max_batch_size(max(1, own["max_batch_size"] // CHUNK))
        self.sample_batch.set_batch_wait_timeout_s(own["batch_wait_timeout_s"])

    def _net(self, model_id: str, sampler: str) -> Any:
        """The loaded model, which must sample with ``sampler`` (``latent`` or ``diffusion``).

        Raises:
            ModelError: a model of the other kind (422), with the options it takes.
        """
        net = self.cache.get(model_id)
        if net.sampler != sampler:
            if net.sampler == "diffusion":
                raise ModelError(f"model '{model_id}' is a diffusion model: /generate needs a phase (one of "
                                 f"{' '.join(PHASES)}, a comma-separated list, or 'all') with n and optional seed, "
                                 "first_index, steps, guidance and scheduler; seeds, truncation and bits are GAN "
                                 "options")
            raise ModelError(f"model '{model_id}' is not a diffusion model: phase, first_index, steps, guidance "
                             "and scheduler are diffusion options (a GAN takes seeds or n and seed, truncation, bits)")
        return net

    def _generate(self, items: list[tuple[str, int, float | None, int]]) -> list[tuple[np.ndarray, int]]:
        results: list[tuple[np.ndarray, int] | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (model_id, _, truncation, bits) in enumerate(items):
            groups.setdefault((model_id, truncation, bits), []).append(i)
        for (model_id, truncation, bits), indices in groups.items():
            images = self.cache.get(model_id).generate([items[i][1] for i in indices], truncation, bits)
            for i, image in zip(indices, images):
                results[i] = (image, len(items))
        return results  # type: ignore[return-value]

    # Defaults only: __init__ applies the configured size and wait.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate_batch(self, items: list[tuple[str, int, float | None, int]]) -> list[tuple[np.ndarray, int]]:
        self.batch_sizes[len(items)] += 1
        return await asyncio.to_thread(self._generate, items)

    async def generate(self, model_id: str, seeds: list[int], truncation: float | None = None,
                       bits: int = 8) -> dict[str, Any]:
        """``{images, batch_sizes, model_info, infer_s}``: one uint8 (``bits=8``) or uint16
        (``bits=16``) image per seed, in order, from latents truncated at ``truncation``.

        Raises:
            ModelError: not a generator (422), or more image bytes than ``limits.max_generate_bytes`` (413).
        """
        from microforge.platform.errors import ConfigError
        from microforge.trainers.predict import check_truncation

        start = time.perf_counter()
        try:
            truncation = check_truncation(truncation)
        except ConfigError as exc:
            raise ModelError(str(exc)) from None
        if bits not in (8, 16):
            raise ModelError(f"bits must be 8 or 16, got {bits}")
        await self._load(model_id)
        net = self._net(model_id, "latent")
        net.check_size(len(seeds), bits, self.max_bytes)
        done = await asyncio.gather(*(self.generate_batch((model_id, int(seed), truncation, bits)) for seed in seeds))
        return {"images": [image for image, _ in done], "batch_sizes": [size for _, size in done],
                "model_info": net.info, "infer_s": time.perf_counter() - start}

    # Defaults only: __init__ applies the configured size (in chunks) and wait.
    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.02)
    async def sample_batch(self, items: list[tuple]) -> list[tuple[list[np.ndarray], int, float]]:
        results = await asyncio.to_thread(sample_items, self.cache.get, items)
        self.batch_sizes[results[0][1]] += 1
        return results

    async def sample(self, model_id: str, request: DiffusionRequest) -> dict[str, Any]:
        """``{images, batch_sizes, phases, model_info, infer_s}`` of a diffusion model: the uint8
        ``(H, W)`` images of ``request.indices``, in order, each sampled in its chunk (see
        :mod:`microforge.serve.diffusion`); ``batch_sizes``: images sampled in each image's batched
        call; ``phases``: what the request's phase means for this model.

        Raises:
            ModelError: not a diffusion model or a phase it does not generate (422), or more image
                bytes than ``limits.max_generate_bytes`` (413).
        """
        start = time.perf_counter()
        await self._load(model_id)
        net = self._net(model_id, "diffusion")
        net.check_size(request.n, self.max_bytes)
        phases = request.phases_for(model_id, net.phases)
        items = chunk_items(model_id, request, phases)
        done = dict(zip(items, await asyncio.gather(*(self.sample_batch(item) for item in items.values()))))
        picked = [(done[i // CHUNK][0][i % CHUNK], done[i // CHUNK][1]) for i in request.indices]
        return {"images": [image for image, _ in picked], "batch_sizes": [size for _, size in picked],
                "phases": phases, "model_info": net.info, "infer_s": time.perf_counter() - start}


@serve.deployment
class ColorizerModel(_BatchedModels):
    """Colorization with dynamic batching that counts images: each request's image is one batch
    item; a batch runs one forward pass per (model, padded image shape)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._setup(settings, "ColorizerModel", self.colorize_batch, load_colorizer)

    def _colorize(self, items: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, int, float]]:
        results: list[tuple[np.ndarray, int, float] | None] = [None] * len(items)
        for model_id, indices in _by_model(items).items():
            start = time.perf_counter()
            images = self.cache.get(model_id).colorize([items[i][1] for i in indices])
            seconds = time.perf_counter() - start
            for i, image in zip(indices, images):
                results[i] = (image, len(items), seconds)
        return results  # type: ignore[return-value]

    # Defaults only: __init__ applies the configured size and wait.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def colorize_batch(self, items: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, int, float]]:
        self.batch_sizes[len(items)] += 1
        return await asyncio.to_thread(self._colorize, items)

    async def colorize(self, model_id: str, image: np.ndarray) -> dict[str, Any]:
        """``{image, batch_size, model_info, infer_s}``: the uint8 RGB ``(H, W, 3)`` colorization of
        a uint8/uint16 gray or BGR image (see :func:`microforge.trainers.predict.colorize_images`).

        Raises:
            ModelError: not a colorize artifact, or one that does not load (422).
        """
        await self._load(model_id)
        net = self.cache.get(model_id)
        colorized, batch_size, seconds = await self.colorize_batch((model_id, image))
        return {"image": colorized, "batch_size": batch_size, "model_info": net.info, "infer_s": seconds}



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

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        pass

    def preview(self, config: dict[str, Any], t: float, seed: int, quality: int, return_obbs: bool) -> dict[str, Any]:
        out = render_preview(config, t, seed, quality, return_obbs)
        out["replica"] = serve.get_replica_context().replica_id.unique_id
        return out
