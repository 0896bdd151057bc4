"""Oriented-box inference (the ``detect`` task): boxes, their statistics and overlay images."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import Field

from ..backend import Backend, check_infer_pixels, get_backend, image_url, offload
from ..images import PreprocPipeline, apply_pipeline
from .analysis import ImageBody

router = APIRouter(tags=["detection"])

OVERLAYS = "overlays"


class InferenceBody(ImageBody):
    model_id: Optional[str] = Field(None, description="Default: the selected model.")


class CompareBody(InferenceBody):
    pipeline: PreprocPipeline = Field(default_factory=PreprocPipeline)


async def _detect(backend: Backend, image: np.ndarray, model_id: str) -> dict[str, Any]:
    check_infer_pixels(backend, image)
    start = time.perf_counter()
    result = await backend.call(backend.handle("detect").detect, model_id, image)
    inferred = time.perf_counter()
    overlay, stats = await offload(backend.save_overlay, OVERLAYS, image, result["detections"])
    return {"detections": result["detections"], "stats": stats, "overlay_url": image_url(overlay),
            "overlay_name": overlay, "model_info": result["model_info"],
            "timings": {"infer_s": inferred - start, "overlay_s": time.perf_counter() - inferred}}


@router.post("/inference")
async def inference(body: InferenceBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Oriented boxes, their statistics and an overlay image for an uploaded image."""
    start = time.perf_counter()
    image = await offload(backend.load_image, body.image_name)
    loaded = time.perf_counter()
    result = await _detect(backend, image, await backend.model_id("detect", body.model_id))
    timings = {"load_s": loaded - start, **result.pop("timings"), "total_s": time.perf_counter() - start}
    return {"ok": True, "image": body.image_name, "image_url": image_url(body.image_name), **result,
            "timings": timings}


@router.post("/inference_compare")
async def inference_compare(body: CompareBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Inference on the original and on the preprocessed image, side by side."""
    start = time.perf_counter()
    image = await offload(backend.load_image, body.image_name)
    processed = await offload(apply_pipeline, image, body.pipeline)
    model_id = await backend.model_id("detect", body.model_id)
    original, after = await asyncio.gather(_detect(backend, image, model_id), _detect(backend, processed, model_id))
    return {"ok": True, "image": body.image_name, "original": original, "processed": after,
            "model_info": original["model_info"], "timings": {"total_s": time.perf_counter() - start}}
