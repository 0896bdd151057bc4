"""Generation (the ``generate`` task): images from seeds with a generator artifact.

``POST /generate`` takes ``{model?, seeds: [..]}`` or ``{model?, n, seed?}`` (``n`` images
of seeds ``seed, seed+1, ...``; a random ``seed`` when none is given), plus ``truncation?`` (every
latent value with ``|z| > T`` redrawn; T in [0.05, 4], 0 or null: none) and ``bits?`` (8 or 16:
16-bit images are PNG-16 through the artifact's inverse transform), and answers PNG data URLs
with their seeds. ``model_id`` is another name of ``model``. An image is a function of
(artifact, seed, truncation, bits): the same request gives the same bytes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal, Optional

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from pydantic import AliasChoices, Field, field_validator, model_validator

from microforge.platform.errors import ConfigError
from microforge.trainers.predict import MAX_TRUNCATION, MIN_TRUNCATION, check_truncation

from ..backend import Backend, RequestBody, get_backend, offload
from ..images import png_b64

router = APIRouter(tags=["generation"])

# torch.Generator.manual_seed keeps only the low 32 bits: a larger seed would repeat a smaller
# one's image. The seeds of `microforge generate` datasets lie in the same range.
MAX_SEED = 2**32 - 1


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

    @field_validator("truncation")
    @classmethod
    def _truncation(cls, value: Optional[float]) -> Optional[float]:
        try:
            return check_truncation(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_way(self) -> "GenerateBody":
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
    bit) in the order of the seeds; ``seeds``, ``truncation`` and ``bits`` as used."""
    start = time.perf_counter()
    count = len(body.seeds) if body.seeds is not None else int(body.n or 0)
    cap = backend.limits.max_generate_images
    if count > cap:
        raise HTTPException(422, f"{count} images; at most {cap} per request (limits.max_generate_images)")
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
