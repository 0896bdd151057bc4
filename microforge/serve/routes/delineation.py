"""Delineation: health, the synthetic demo, and U-Net mask prediction (batched by the deployment)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import Response

from ..backend import Backend, get_backend, offload
from ..images import encode, png_b64, to_gray_u8

router = APIRouter(tags=["delineation"])

DEMO_SIZE = 256  # demo canvas when the model card does not record its training size


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


async def _predict(backend: Backend, image: np.ndarray, model_id: str | None = None,
                   with_prob: bool = False) -> dict[str, Any]:
    """Run the segmentation model on a gray image (uint8, or float32 in [0, 1]) through the
    batching deployment."""
    model_id = model_id or await backend.segmentation_id()
    return await backend.call(backend.segmentation.predict, model_id, image, with_prob)


@router.get("/health")
async def health(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Status, device and loaded models; ``batching`` shows the batch sizes one replica has run."""
    selection = await backend.selection()
    try:
        batching, loaded_detectors = await asyncio.wait_for(asyncio.gather(
            backend.call(backend.segmentation.stats), backend.call(backend.detector.loaded)), timeout=10)
        status = "ok"
    except Exception:  # a timeout or a failing replica: health reports it rather than failing
        batching, loaded_detectors, status = {}, [], "degraded"
    seg = backend.config.deployments["SegmentationModel"]
    return {"ok": True, "status": status,
            "device": "cuda" if seg.ray_actor_options.num_gpus > 0 else "cpu",
            "models": {"selected": selection, "segmentation_loaded": batching.get("loaded", []),
                       "detectors_loaded": loaded_detectors},
            "batching": {"max_batch_size": seg.max_batch_size, "batch_wait_timeout_s": seg.batch_wait_timeout_s,
                         **{k: v for k, v in batching.items() if k != "loaded"}}}


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
    model_id = await backend.segmentation_id()
    info = await backend.call(backend.segmentation.describe, model_id)
    size = int(info.get("image_size") or DEMO_SIZE)  # the size the model was trained at
    sample = await offload(_render_demo, num_dots, jitter, noise_type, noise_scale, seed, size)
    rendered = time.perf_counter()
    result = await _predict(backend, sample.image, model_id, with_prob=True)
    predicted = time.perf_counter()
    images = await offload(lambda: {
        "input_b64": png_b64(_to_u8(sample.image)), "mask_b64": png_b64(result["mask"]),
        "prob_b64": png_b64(result["prob"]), "true_mask_b64": png_b64(sample.mask * 255),
        "dice": dice(result["mask"], sample.mask)})
    return {"ok": True, **images, "snr_db": sample.meta["snr_db"],
            "noise_type": sample.meta["noise_type"], "num_dots": sample.meta["n_dots"], "seed": seed,
            "batch_size": result["batch_size"], "model_info": result["model_info"],
            "timings": {"render_s": rendered - start, "predict_s": predicted - rendered,
                        "total_s": time.perf_counter() - start}}


@router.post("/predict", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "binary mask (0/255) PNG"}})
async def predict(file: UploadFile = File(...), backend: Backend = Depends(get_backend)) -> Response:
    """Image in, binary mask PNG out."""
    image = await backend.decode_upload(file)
    result = await _predict(backend, await offload(to_gray_u8, image))
    png = await offload(encode, result["mask"], ".png")
    return Response(png, media_type="image/png", headers={"X-Batch-Size": str(result["batch_size"])})


@router.post("/predict/json")
async def predict_json(file: UploadFile = File(...), backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Image in; base64 mask and probability map, statistics and the batch it ran in."""
    start = time.perf_counter()
    image = await backend.decode_upload(file)
    gray = await offload(to_gray_u8, image)
    decoded = time.perf_counter()
    result = await _predict(backend, gray, with_prob=True)
    predicted = time.perf_counter()
    encoded = await offload(lambda: {"mask_b64": png_b64(result["mask"]), "prob_b64": png_b64(result["prob"])})
    return {"ok": True, **encoded, "stats": result["stats"],
            "batch_size": result["batch_size"], "model_info": result["model_info"],
            "timings": {"decode_s": decoded - start, "predict_s": predicted - decoded,
                        "infer_s": result["infer_s"], "total_s": time.perf_counter() - start}}
