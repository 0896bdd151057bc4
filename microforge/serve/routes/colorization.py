"""Colorization (the ``colorize`` task): an uploaded image through a CycleGAN's ``generator_ab``.

``POST /colorize`` takes an image upload (PNG, JPEG, TIFF or BMP; gray or colour, 8 or 16 bits;
decoded and checked like every upload) and answers the colorized PNG (8-bit RGB, the size of the
upload); ``POST /colorize/json`` answers PNG data URLs of the model's gray input (before) and the
colorization (after), with the model and the batch it ran in. Both run
:func:`microforge.trainers.predict.colorize_images`, batched by the deployment (each upload is one
image of a batch): a served image equals the offline one.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import cv2
import numpy as np
from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import Response

from microforge.trainers.predict import gray_uint8

from ..backend import Backend, check_infer_pixels, get_backend, offload
from ..images import encode, png_b64

router = APIRouter(tags=["colorization"])

MODEL_QUERY = Query(None, description="A colorize artifact id from /available_models?task=colorize "
                                      "(default: the selected one, else the newest).")


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


async def _colorize(backend: Backend, file: UploadFile, model_id: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The upload's uint8 gray (what the model reads, before any inversion) and the deployment's answer."""
    image = await backend.decode_upload(file)
    check_infer_pixels(backend, image)
    gray = await offload(gray_uint8, image)  # the replica sends it through the same function again: a no-op
    model_id = await backend.model_id("colorize", model_id)
    return gray, await backend.call(backend.handle("colorize").colorize, model_id, gray)


@router.post("/colorize", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the colorized image (8-bit RGB PNG)"}})
async def colorize(file: UploadFile = File(...), model_id: Optional[str] = MODEL_QUERY,
                   backend: Backend = Depends(get_backend)) -> Response:
    """Image in (gray or colour, 8 or 16 bits), colorized RGB PNG out, the size of the input."""
    _, result = await _colorize(backend, file, model_id)
    png = await offload(lambda: encode(_bgr(result["image"]), ".png"))
    return Response(png, media_type="image/png", headers={"X-Batch-Size": str(result["batch_size"])})


@router.post("/colorize/json")
async def colorize_json(file: UploadFile = File(...), model_id: Optional[str] = MODEL_QUERY,
                        backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Image in; ``input_b64`` (the 8-bit gray the model reads, before ``invert_input``) and
    ``image_b64`` (the colorization) as PNG data URLs, their size, the model and the batch."""
    start = time.perf_counter()
    gray, result = await _colorize(backend, file, model_id)
    colorized = time.perf_counter()
    images = await offload(lambda: {"input_b64": png_b64(gray), "image_b64": png_b64(_bgr(result["image"]))})
    height, width = gray.shape
    return {"ok": True, **images, "width": width, "height": height,
            "inverted": bool(result["model_info"].get("invert_input")), "batch_size": result["batch_size"],
            "model_info": result["model_info"],
            "timings": {"colorize_s": colorized - start, "infer_s": result["infer_s"],
                        "total_s": time.perf_counter() - start}}
