"""Diffusion models under the ``generate`` task, sampled the way ``microforge generate diffusion``
samples them.

Dispatch reads what the artifact declares: the diffusion sampler its card names (see
:func:`microforge.trainers.diffusion.sampling.sampler_for`: a class-conditional DDPM, a
fine-tuned Stable Diffusion pipeline, ...). A card whose sampler accepts it is a diffusion model
(:func:`diffusion_sampler`); :func:`microforge.serve.generation.load_generator` then loads a
:class:`DiffusionNet` rather than a latent generator. No workload name is consulted.

A request ``(phase, n, seed, first_index, steps, guidance, scheduler)`` answers the images of
indices ``first_index .. first_index + n - 1`` of the run ``microforge generate diffusion --phase
PHASE --seed SEED --steps STEPS --guidance G --scheduler S`` (its default ``--batch-size``):
image ``i`` has the phase ``phases[i % len(phases)]`` and the seed ``seed_of(seed, i)``, and is
sampled in the same **chunk** as offline (the :data:`CHUNK` images of indices ``CHUNK * c ..
CHUNK * c + CHUNK - 1`` in one ``sample`` call), then goes through the same inverse transform
and PNG encoder. So an image is a pure function of (model, phases, seed, index, steps, guidance,
scheduler) and, on one kind of device, byte-identical to the offline file.

Chunks are the unit of dynamic batching (``GeneratorModel.sample_batch``): concurrent requests'
chunks share a batched call, grouped by (model, steps, guidance, scheduler); identical chunks are
sampled once; each chunk keeps its own ``sample`` call, because a batch's numerics depend on its
composition and an image must not depend on what other requests asked for.

Importing this module imports neither torch nor Ray.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from microforge.generate import seed_of
from microforge.generate.cli import DIFFUSION_BATCH_SIZE, DIFFUSION_DEFAULTS
from microforge.generate.diffusion import MAX_STEPS, parse_phases
from microforge.platform.artifact import ArtifactCard
from microforge.platform.errors import ConfigError
from microforge.trainers.diffusion.model import SCHEDULERS

from .discovery import ModelError
from .generation import check_image_bytes

__all__ = ["CHUNK", "DEFAULTS", "DiffusionNet", "DiffusionRequest", "MAX_STEPS", "chunk_items", "diffusion_sampler",
           "load_diffusion", "sample_items"]

CHUNK = DIFFUSION_BATCH_SIZE  # images sampled together, as `microforge generate diffusion` batches them
DEFAULTS = {name: DIFFUSION_DEFAULTS[name] for name in ("steps", "guidance", "scheduler")}
ALL = "all"


def diffusion_sampler(model_id: str, card: ArtifactCard, folder: str | Path) -> Any:
    """The diffusion sampler class the artifact declares and accepts, or None: not a diffusion
    model (a card that declares no sampler and is no class-conditional DDPM, e.g. a GAN).

    Raises:
        ModelError: the card declares a sampler that cannot be imported or refuses the artifact (422).
    """
    from microforge.trainers.diffusion.sampling import sampler_for

    cls, refused = sampler_for(card, folder)
    if cls is not None and refused is None:
        return cls
    if "sampler" in card.preprocessing:
        raise ModelError(f"model '{model_id}' declares a diffusion sampler that cannot run it: {refused}")
    return None


@dataclass(frozen=True)
class DiffusionRequest:
    """The checked parameters of one diffusion ``/generate`` (what decides its images).

    ``phase`` is the CLI's ``--phase`` text (``t2``, ``t2,t4``; ``all``: every phase the model
    generates); :meth:`phases_for` resolves it for a model.
    """

    phase: str
    seed: int
    n: int
    first_index: int = 0
    steps: int = DEFAULTS["steps"]
    guidance: float = DEFAULTS["guidance"]
    scheduler: str = DEFAULTS["scheduler"]

    def __post_init__(self) -> None:
        if self.n < 1 or self.seed < 0 or self.first_index < 0:
            raise ModelError(f"n must be >= 1 and seed, first_index >= 0 (got {self.n}, {self.seed}, "
                             f"{self.first_index})")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ModelError(f"steps must be an integer in [1, {MAX_STEPS}], got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ModelError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.scheduler not in SCHEDULERS:
            raise ModelError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got '{self.scheduler}'")
        try:
            parse_phases(self.phase)
        except ConfigError as exc:  # an unknown phase, with a did-you-mean
            raise ModelError(str(exc)) from None

    @property
    def indices(self) -> range:
        return range(self.first_index, self.first_index + self.n)

    def phases_for(self, model_id: str, generated: Sequence[str]) -> list[str]:
        """The request's phases for a model that generates ``generated``.

        Raises:
            ModelError: a phase the model does not generate (422).
        """
        if self.phase == ALL:
            return list(generated)
        phases = parse_phases(self.phase)
        missing = [p for p in phases if p not in generated]
        if missing:
            raise ModelError(f"model '{model_id}' does not generate phase {', '.join(missing)}; it generates "
                             f"{' '.join(generated)}")
        return phases


def chunk_items(model_id: str, request: DiffusionRequest, phases: Sequence[str]) -> dict[int, tuple]:
    """The batch items (one per chunk the request's images fall in), by chunk number:
    ``(model_id, steps, guidance, scheduler, phases, seeds)`` with the chunk's :data:`CHUNK`
    phases (cycling through ``phases``) and image seeds."""
    items = {}
    for chunk in sorted({i // CHUNK for i in request.indices}):
        indices = range(chunk * CHUNK, (chunk + 1) * CHUNK)
        items[chunk] = (model_id, request.steps, float(request.guidance), request.scheduler,
                        tuple(phases[i % len(phases)] for i in indices),
                        tuple(seed_of(request.seed, i) for i in indices))
    return items


class DiffusionNet:
    """A diffusion artifact in a replica: its declared sampler, one instance per scheduler used
    (each built as ``microforge generate diffusion`` builds it)."""

    sampler = "diffusion"

    def __init__(self, model_id: str, folder: Path, card: ArtifactCard, sampler_cls: Any, device: str) -> None:
        self.model_id, self.folder, self.card, self.device = model_id, folder, card, device
        self.sampler_cls = sampler_cls
        self.component = next((c for c in sampler_cls.components if c in card.components),
                              next(iter(card.components)))
        self.phases = list(sampler_cls.phases(card))
        side = int(card.preprocessing.get("image_size") or 0)
        if side <= 0 or not self.phases:
            raise ModelError(f"model '{model_id}': its card records no image_size or its sampler no phases")
        self.image_shape = (side, side, 1)
        self._samplers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def instance(self, scheduler: str) -> Any:
        """The sampler instance of ``scheduler`` (built on first use)."""
        with self._lock:
            if scheduler not in self._samplers:
                try:
                    self._samplers[scheduler] = self.sampler_cls(self.folder, self.component, scheduler,
                                                                 use_gpu=self.device == "cuda")
                except ConfigError as exc:
                    raise ModelError(f"model '{self.model_id}': {exc}") from None
            return self._samplers[scheduler]

    @property
    def info(self) -> dict[str, Any]:
        """The ``model_info`` every response carries (from the card)."""
        component = self.card.components[self.component]
        return {"id": self.model_id, "type": "generator", "task": "generate", "workload": self.card.workload,
                "architecture": component.cls.rpartition(":")[2].rpartition(".")[2],
                "config": dict(component.config or {}), "metrics": self.card.metrics, "device": self.device,
                "transform": self.card.transform, "sampler": self.sampler,
                "sampler_class": f"{self.sampler_cls.__module__}:{self.sampler_cls.__qualname__}",
                "component": self.component, "image_shape": list(self.image_shape), "phases": self.phases,
                "schedulers": list(SCHEDULERS), "chunk": CHUNK}

    def check_size(self, count: int, cap: int) -> None:
        """413 when ``count`` 8-bit images of this model hold more than ``cap`` bytes."""
        check_image_bytes(count, self.image_shape, 8, cap)

    def sample_chunk(self, phases: Sequence[str], seeds: Sequence[int], steps: int, guidance: float,
                     scheduler: str) -> list[np.ndarray]:
        """uint8 ``(H, W)`` images of one chunk, as the offline chunk generator makes them."""
        sampler = self.instance(scheduler)
        x = sampler.sample(list(phases), list(seeds), steps=steps, guidance=guidance)
        return list(sampler.transform.invert(x[:, 0].float().cpu().numpy(), np.uint8))


def load_diffusion(model_id: str, folder: Path, card: ArtifactCard, sampler_cls: Any) -> DiffusionNet:
    """A :class:`DiffusionNet` with its default scheduler's sampler built (so a model that cannot
    load fails here), on the GPU when the replica has one.

    Raises:
        ModelError: the sampler cannot load the artifact.
    """
    import torch

    net = DiffusionNet(model_id, folder, card, sampler_cls, "cuda" if torch.cuda.is_available() else "cpu")
    net.instance(DEFAULTS["scheduler"])
    return net


def sample_items(get_model: Any, items: list[tuple]) -> list[tuple[list[np.ndarray], int, float]]:
    """``(images of the chunk, images sampled in this call, seconds)`` per batch item: the chunks
    grouped by (model, steps, guidance, scheduler), identical chunks sampled once."""
    unique = sorted(dict.fromkeys(items), key=lambda item: (item[0], item[1], item[2], item[3]))
    start = time.perf_counter()
    sampled = {item: get_model(item[0]).sample_chunk(*item[4:], item[1], item[2], item[3]) for item in unique}
    seconds = time.perf_counter() - start
    return [(sampled[item], len(unique) * CHUNK, seconds) for item in items]
