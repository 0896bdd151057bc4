"""Generation (the ``generate`` task): images from seeds with a generator artifact.

``POST /generate`` takes ``{model?, seeds: [..]}`` or ``{model?, n, seed?}`` (``n`` images
of seeds ``seed, seed+1, ...``; a random ``seed`` when none is given), plus ``truncation?`` (every
latent value with ``|z| > T`` redrawn; T in [0.05, 4], 0 or null: none) and ``bits?`` (8 or 16:
16-bit images are PNG-16 through the artifact's inverse transform), and answers PNG data URLs
with their seeds. ``model_id`` is another name of ``model``. An image is a function of
(artifact, seed, truncation, bits): the same request gives the same bytes.

A diffusion model (see :mod:`microforge.serve.diffusion`) takes ``{model?, phase, n, seed?,
first_index?, steps?, guidance?, scheduler?}`` instead: ``phase`` as ``microforge generate
diffusion --phase`` takes it (``t2``, ``t2,t4`` or ``all``), ``seed`` the run seed; the answer
holds the images of indices ``first_index ..`` of that offline run, byte for byte, each with its
index, phase and image seed. ``GET /generate_options`` says which options a model takes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal, Optional

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AliasChoices, Field, field_validator, model_validator

from microforge.datasets.embryo.layout import PHASES
from microforge.datasets.images import encode_image
from microforge.platform.errors import ConfigError
from microforge.trainers.diffusion.model import SCHEDULERS
from microforge.trainers.predict import MAX_TRUNCATION, MIN_TRUNCATION, check_truncation

from ..backend import Backend, RequestBody, get_backend, offload
from ..diffusion import DEFAULTS, MAX_STEPS, DiffusionRequest, diffusion_sampler
from ..discovery import ModelError, resolve_artifact
from ..images import data_url, png_b64

router = APIRouter(tags=["generation"])

# torch.Generator.manual_seed keeps only the low 32 bits: a larger seed would repeat a smaller
# one's image. The seeds of `microforge generate` datasets lie in the same range.
MAX_SEED = 2**32 - 1
DIFFUSION_OPTIONS = ("first_index", "steps", "guidance", "scheduler")  # taken with a phase only


class GenerateBody(RequestBody):
    model_id: Optional[str] = Field(None, validation_alias=AliasChoices("model", "model_id"),
                                    description="`model` (or `model_id`): a generator id from /available_models "
                                                "(default: the selected one, else the newest).")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="One image per seed (non-negative).")
    n: Optional[int] = Field(None, ge=1, description="How many images, of seeds seed, seed+1, ...")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="First seed with n (default: random).")
    truncation: Optional[float] = Field(None, description=f"Truncation trick: latent values with |z| > T are "
                                                          f"redrawn; T in [{MIN_TRUNCATION:g}, {MAX_TRUNCATION:g}], "
                                                          "0 or null: none.")
    bits: Literal[8, 16] = Field(8, description="8-bit PNG, or 16-bit PNG through the artifact's inverse transform.")
    phase: Optional[str] = Field(None, min_length=1, max_length=400,
                                 description=f"Diffusion models (required): the images' phase, one of "
                                             f"{' '.join(PHASES)}; a comma-separated list (images cycle through "
                                             "it); or 'all'.")
    first_index: Optional[int] = Field(None, ge=0, le=MAX_SEED,
                                       description="Diffusion: index of the first image in the run (default 0).")
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description=f"Diffusion: sampling steps (default "
                                                                       f"{DEFAULTS['steps']}; at most "
                                                                       "limits.max_generate_steps).")
    guidance: Optional[float] = Field(None, ge=0, allow_inf_nan=False,
                                      description=f"Diffusion: classifier-free guidance scale (default "
                                                  f"{DEFAULTS['guidance']}; 1: conditional only, 0: unconditional).")
    scheduler: Optional[Literal[tuple(SCHEDULERS)]] = Field(  # type: ignore[valid-type]
        None, description=f"Diffusion: the sampler, one of {', '.join(SCHEDULERS)} (default {DEFAULTS['scheduler']}).")

    @field_validator("truncation")
    @classmethod
    def _truncation(cls, value: Optional[float]) -> Optional[float]:
        try:
            return check_truncation(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_way(self) -> "GenerateBody":
        options = [name for name in DIFFUSION_OPTIONS if getattr(self, name) is not None]
        if self.phase is None and options:
            raise ValueError(f"{', '.join(options)}: diffusion options, which go with a phase")
        if self.phase is not None and (self.seeds is not None or self.truncation is not None or self.bits != 8):
            raise ValueError("a diffusion request (with a phase) takes n and an optional seed (the run seed); "
                             "seeds, truncation and bits are GAN options")
        if (self.seeds is None) == (self.n is None):
            raise ValueError("give either seeds or n (with an optional seed)")
        if self.seeds is not None and self.seed is not None:
            raise ValueError("seed goes with n; with seeds, list every seed")
        if self.seeds is not None and any(s < 0 or s > MAX_SEED for s in self.seeds):
            raise ValueError(f"seeds must lie in [0, {MAX_SEED}]")
        return self

    def seed_list(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        first = secrets.randbelow(2**31) if self.seed is None else self.seed
        if first + self.n - 1 > MAX_SEED:  # type: ignore[operator]
            raise HTTPException(422, f"seeds past {MAX_SEED}")
        return list(range(first, first + self.n))  # type: ignore[operator]


def _png(image: np.ndarray) -> str:
    """A PNG data URL of a uint8 or uint16 gray, RGB or RGBA image (generators emit RGB order)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    return png_b64(np.ascontiguousarray(image))


@router.post("/generate")
async def generate(body: GenerateBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Images from seeds: ``images: [{seed, image_b64, width, height}]`` (PNG data URLs, 8 or 16
    bit) in the order of the seeds; ``seeds``, ``truncation`` and ``bits`` as used.

    With a ``phase`` (diffusion models): ``images: [{index, phase, seed, image_b64, width, height}]``
    (8-bit PNG, the bytes ``microforge generate diffusion`` writes), ``seeds`` (each image's),
    ``seed`` (the run's), ``phases``, ``first_index``, ``steps``, ``guidance``, ``scheduler``."""
    start = time.perf_counter()
    count = len(body.seeds) if body.seeds is not None else int(body.n or 0)
    cap = backend.limits.max_generate_images
    if count > cap:
        raise HTTPException(422, f"{count} images; at most {cap} per request (limits.max_generate_images)")
    if body.phase is not None:
        return await _generate_diffusion(body, backend, start)
    seeds = body.seed_list()
    model_id = await backend.model_id("generate", body.model_id)
    result = await backend.call(backend.handle("generate").generate, model_id, seeds, body.truncation, body.bits)
    generated = time.perf_counter()
    images = await offload(lambda: [{"seed": seed, "image_b64": _png(image), "width": int(image.shape[1]),
                                     "height": int(image.shape[0])} for seed, image in zip(seeds, result["images"])])
    return {"ok": True, "model_info": result["model_info"], "images": images, "seeds": seeds,
            "truncation": body.truncation, "bits": body.bits,
            "batch_sizes": result["batch_sizes"],
            "timings": {"generate_s": generated - start, "infer_s": result["infer_s"],
                        "total_s": time.perf_counter() - start}}


async def _generate_diffusion(body: GenerateBody, backend: Backend, start: float) -> dict[str, Any]:
    steps = DEFAULTS["steps"] if body.steps is None else body.steps
    cap = backend.limits.max_generate_steps
    if steps > cap:
        raise HTTPException(422, f"{steps} steps; at most {cap} per request (limits.max_generate_steps)")
    request = DiffusionRequest(
        body.phase or "", seed=secrets.randbelow(2**31) if body.seed is None else body.seed, n=int(body.n or 0),
        first_index=body.first_index or 0, steps=steps,
        guidance=DEFAULTS["guidance"] if body.guidance is None else float(body.guidance),
        scheduler=body.scheduler or DEFAULTS["scheduler"])
    model_id = await backend.model_id("generate", body.model_id)
    result = await backend.call(backend.handle("generate").sample, model_id, request)
    generated = time.perf_counter()

    phases = result["phases"]

    def encoded() -> list[dict[str, Any]]:
        from microforge.generate import seed_of

        return [{"index": index, "phase": phases[index % len(phases)], "seed": seed_of(request.seed, index),
                 "image_b64": data_url(encode_image(image, ".png"), "image/png"), "width": int(image.shape[1]),
                 "height": int(image.shape[0])} for index, image in zip(request.indices, result["images"])]

    images = await offload(encoded)
    return {"ok": True, "model_info": result["model_info"], "images": images, "seeds": [i["seed"] for i in images],
            "seed": request.seed, "phase": request.phase, "phases": phases,
            "first_index": request.first_index, "steps": request.steps, "guidance": request.guidance,
            "scheduler": request.scheduler, "bits": 8, "batch_sizes": result["batch_sizes"],
            "timings": {"generate_s": generated - start, "infer_s": result["infer_s"],
                        "total_s": time.perf_counter() - start}}


def _sampler(models_dir: Any, model_id: str) -> tuple[Any, Any, Any]:
    """``(folder, card, its diffusion sampler class or None)`` of a generate artifact (no weights loaded)."""
    from microforge.platform.artifact import ArtifactError, read_card

    folder = resolve_artifact(models_dir, model_id, "generate")
    try:
        card = read_card(folder)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from None
    return folder, card, diffusion_sampler(model_id, card, folder)


@router.get("/generate_options")
async def generate_options(model: Optional[str] = Query(None, description="A generator id from /available_models "
                                                                          "(default: the one /generate would use)."),
                           backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """What ``/generate`` takes for ``model`` (read from its card; nothing is loaded): ``sampler``
    ``diffusion`` with the ``phases`` it generates, ``schedulers``, ``max_steps`` and ``defaults``,
    or ``latent`` (a GAN) with ``bits`` and the ``truncation`` range; ``max_images`` for both."""
    model_id = await backend.model_id("generate", model)
    _, card, sampler = await offload(_sampler, backend.models_dir, model_id)
    limits = backend.limits
    common = {"ok": True, "model": model_id, "max_images": limits.max_generate_images}
    if sampler is not None:
        return {**common, "sampler": "diffusion", "phases": list(sampler.phases(card)),
                "schedulers": list(SCHEDULERS), "max_steps": min(MAX_STEPS, limits.max_generate_steps),
                "defaults": dict(DEFAULTS)}
    return {**common, "sampler": "latent", "bits": [8, 16], "truncation": [MIN_TRUNCATION, MAX_TRUNCATION]}
