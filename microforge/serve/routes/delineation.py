"""Delineation (the ``segment`` task): the synthetic demo and mask prediction (batched by the deployment).

Uploaded images reach the model in their own dtype (uint8 or uint16, converted to gray): the
artifact's recorded transform scales them, exactly as eval does. A model works at the scale it
was trained at (the card's ``scale``: training image size, median silhouette and dot radii);
by default the upload is resized so its longer side is the training image size, ``?scale=``
resizes it by that factor instead (e.g. ``training dot radius / your dot radius``); large
results are tiled; the mask always comes back at the upload's size. A pixel is foreground where its
probability is strictly above ``sigmoid(threshold)``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import Response

from microforge.trainers.metrics import dice_score

from ..backend import Backend, check_infer_pixels, get_backend, offload
from ..images import encode, png_b64, to_gray

router = APIRouter(tags=["delineation"])

DEMO_SIZE = 256  # demo canvas when the model card does not record its training size


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


async def _predict(backend: Backend, image: np.ndarray, model_id: str | None = None,
                   prob: str | None = None, scale: float | None = None) -> dict[str, Any]:
    """Run the segmentation model on a gray image (uint8, uint16, or float in the transform's
    range) through the batching deployment; ``prob``: ``u8``/``f32`` asks for the map; ``scale``
    overrides the resize to the model's training scale."""
    check_infer_pixels(backend, image)
    if scale is not None:  # the network's input, not the upload, is what costs memory
        check_infer_pixels(backend, np.empty((max(1, round(image.shape[0] * scale)),
                                              max(1, round(image.shape[1] * scale))), np.uint8))
    model_id = await backend.model_id("segment", model_id)
    return await backend.call(backend.handle("segment").predict, model_id, image, prob, scale)


def _render_demo(num_dots: int, jitter: float, noise_type: Optional[str], noise_scale: Optional[float],
                 seed: int, size: int):
    from microforge.datasets.blobs import BlobConfig, render_blob

    config: dict[str, Any] = {"size": size, "dots": (num_dots, num_dots), "dot_jitter": jitter}
    if noise_type:
        config["noise_types"] = (noise_type,)
        config["mixed_prob"] = 1.0 if noise_type == "mixed" else 0.0
    return render_blob(BlobConfig.load(config), seed, 0, noise_scale=noise_scale)


@router.get("/demo")
async def demo(num_dots: int = Query(40, ge=1, le=2000), jitter: float = Query(0.03, ge=0, le=1),
               noise_type: Optional[str] = Query(None, max_length=32),
               noise_scale: Optional[float] = Query(None, ge=0, le=1),
               seed: Optional[int] = Query(None, ge=0, le=2**31 - 1),
               backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Synthesise a dot pattern, predict its silhouette, and score it (Dice) against the truth."""
    start = time.perf_counter()
    seed = secrets.randbelow(2**31) if seed is None else seed
    model_id = await backend.model_id("segment")
    info = await backend.call(backend.handle("segment").describe, model_id)
    size = int(info.get("image_size") or DEMO_SIZE)  # the size the model was trained at
    sample = await offload(_render_demo, num_dots, jitter, noise_type, noise_scale, seed, size)
    rendered = time.perf_counter()
    result = await _predict(backend, sample.image, model_id, prob="u8")
    predicted = time.perf_counter()
    images = await offload(lambda: {
        "input_b64": png_b64(_to_u8(sample.image)), "mask_b64": png_b64(result["mask"]),
        "prob_b64": png_b64(result["prob"]), "true_mask_b64": png_b64(sample.mask * 255),
        "dice": float(dice_score(result["mask"], sample.mask))})
    return {"ok": True, **images, "snr_db": sample.meta["snr_db"],
            "noise_type": sample.meta["noise_type"], "num_dots": sample.meta["n_dots"], "seed": seed,
            "batch_size": result["batch_size"], "model_info": result["model_info"],
            "timings": {"render_s": rendered - start, "predict_s": predicted - rendered,
                        "total_s": time.perf_counter() - start}}


MODEL_QUERY = Query(None, description="An artifact id from /available_models (default: the selected one).")
SCALE_QUERY = Query(None, ge=0.01, le=16, description="Resize the image by this factor before the network (e.g. the "
                    "model's training dot radius / the dot radius in your image); default: the longer side to the "
                    "model's training image size (models that record no scale: 1). The mask keeps the upload's size.")


@router.post("/predict", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "binary mask (0/255) PNG"}})
async def predict(file: UploadFile = File(...), model_id: Optional[str] = MODEL_QUERY,
                  scale: Optional[float] = SCALE_QUERY, backend: Backend = Depends(get_backend)) -> Response:
    """Image in, binary mask PNG (the image's size) out."""
    image = await backend.decode_upload(file)
    result = await _predict(backend, await offload(to_gray, image), model_id, scale=scale)
    png = await offload(encode, result["mask"], ".png")
    return Response(png, media_type="image/png", headers={"X-Batch-Size": str(result["batch_size"])})


@router.post("/predict/json")
async def predict_json(file: UploadFile = File(...), model_id: Optional[str] = MODEL_QUERY,
                       values: bool = Query(False, description="Also return the exact float probabilities "
                                                               "(prob_values, rows of floats)."),
                       scale: Optional[float] = SCALE_QUERY,
                       backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Image in; base64 mask and probability map (PNG, quantised to 8 bits), statistics and the
    batch it ran in."""
    start = time.perf_counter()
    image = await backend.decode_upload(file)
    gray = await offload(to_gray, image)
    decoded = time.perf_counter()
    result = await _predict(backend, gray, model_id, prob="f32" if values else "u8", scale=scale)
    predicted = time.perf_counter()

    def encoded() -> dict[str, Any]:
        prob = result["prob"]
        out = {"mask_b64": png_b64(result["mask"]), "prob_b64": png_b64(_to_u8(prob) if values else prob)}
        if values:
            out["prob_values"] = prob.tolist()
        return out

    return {"ok": True, **await offload(encoded), "stats": result["stats"],
            "batch_size": result["batch_size"], "model_info": result["model_info"],
            "timings": {"decode_s": decoded - start, "predict_s": predicted - decoded,
                        "infer_s": result["infer_s"], "total_s": time.perf_counter() - start}}
