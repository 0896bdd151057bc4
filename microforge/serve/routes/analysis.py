"""Images, preprocessing, models and oriented-box inference, and the system overview."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import Field

from microforge.platform.storage import atomic_write_bytes, atomic_write_text, write_new_file

from ..backend import Backend, RequestBody, get_backend, image_url, offload
from ..images import (MEDIA_TYPES, OPERATIONS, PreprocPipeline, apply_operation, apply_pipeline, decode_image,
                      encode, jpeg_b64, probe_image)
from ..models import list_models, resolve_model_folder
from ..paths import PathRejected, check_name, relative_to_root

router = APIRouter(tags=["images, models and inference"])

UPLOADS = "uploads"
PREPROCESSED = "preprocessed"
OVERLAYS = "overlays"
PREPROC_PRESETS = "presets/preproc"


def safe_filename(filename: Optional[str], suffix: str) -> str:
    """The upload's base name reduced to safe characters, with the suffix of its real format."""
    stem = Path(filename or "image").stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._")[:100] or "image"
    return f"{stem}{suffix}"


class ImageBody(RequestBody):
    image_name: str = Field(..., description="Image path relative to the data root (as /upload returns it).")


class PreprocessBody(ImageBody):
    operation: Literal[OPERATIONS]  # type: ignore[valid-type]


class PipelineBody(ImageBody):
    pipeline: PreprocPipeline = Field(default_factory=PreprocPipeline)
    quality: int = Field(85, ge=1, le=100)


class SavePreprocessedBody(ImageBody):
    pipeline: PreprocPipeline = Field(default_factory=PreprocPipeline)
    name: Optional[str] = Field(None, description="File name to save under preprocessed/ (default: derived).")


class PreprocPresetBody(RequestBody):
    name: str
    pipeline: PreprocPipeline


class ModelBody(RequestBody):
    model_id: str = Field(..., description="An id from /available_models.")


class FolderBody(RequestBody):
    folder: str = Field(..., description="A folder inside the models directory (relative, or absolute within it).")


class InferenceBody(ImageBody):
    model_id: Optional[str] = Field(None, description="Default: the selected model.")


class CompareBody(InferenceBody):
    pipeline: PreprocPipeline = Field(default_factory=PreprocPipeline)


# --- images ----------------------------------------------------------------------------------------

@router.post("/upload")
async def upload(file: UploadFile = File(...), backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Store an image under ``uploads/`` (size, dimensions and content checked); returns its name,
    which gets a numbered suffix (``name-1.png``) when an earlier upload holds the name."""
    data = await backend.read_upload(file)
    limits = backend.limits

    def validate() -> tuple[int, int, str]:
        found = probe_image(data, max_side=limits.max_image_side, max_pixels=limits.max_image_pixels)
        decode_image(data, max_side=limits.max_image_side, max_pixels=limits.max_image_pixels)  # pixels too
        return found

    width, height, suffix = await offload(validate)
    # A name already taken gets a numbered suffix: an upload never replaces an earlier one.
    path = await offload(write_new_file, backend.data_root / UPLOADS / safe_filename(file.filename, suffix), data)
    name = f"{UPLOADS}/{path.name}"
    return {"ok": True, "name": name, "filename": file.filename, "width": width, "height": height,
            "bytes": len(data), "url": image_url(name)}


@router.get("/get_image", response_class=FileResponse,
            responses={200: {"content": {m: {} for m in sorted(set(MEDIA_TYPES.values()))}}})
async def get_image(name: str = Query(...), backend: Backend = Depends(get_backend)) -> FileResponse:
    """An image file under the data root."""
    path = await offload(backend.image_path, name)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lower()])


# --- preprocessing ---------------------------------------------------------------------------------

@router.post("/preprocess")
async def preprocess(body: PreprocessBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Apply one operation (gray, equalize, clahe, blur, denoise, gradient) and save the result."""
    def run() -> dict[str, Any]:
        out = apply_operation(backend.load_image(body.image_name), body.operation)
        name = f"{PREPROCESSED}/{Path(body.image_name).stem}_{body.operation}.png"
        atomic_write_bytes(backend.data_root / name, encode(out, ".png"))
        return {"name": name, "width": int(out.shape[1]), "height": int(out.shape[0])}

    saved = await offload(run)
    return {"ok": True, "operation": body.operation, **saved, "url": image_url(saved["name"])}


@router.post("/preproc_preview")
async def preproc_preview(body: PipelineBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """The image after the pipeline, as a JPEG data URL."""
    def run() -> dict[str, Any]:
        out = apply_pipeline(backend.load_image(body.image_name), body.pipeline)
        return {"overlay_b64": jpeg_b64(out, body.quality), "width": int(out.shape[1]), "height": int(out.shape[0])}

    return {"ok": True, **await offload(run)}


@router.post("/save_preprocessed")
async def save_preprocessed(body: SavePreprocessedBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    stem = check_name(body.name, "name").rsplit(".", 1)[0] if body.name else f"{Path(body.image_name).stem}_pre"

    def run() -> str:
        out = apply_pipeline(backend.load_image(body.image_name), body.pipeline)
        name = f"{PREPROCESSED}/{stem}.png"
        atomic_write_bytes(backend.data_root / name, encode(out, ".png"))
        return name

    name = await offload(run)
    return {"ok": True, "name": name, "url": image_url(name)}


@router.post("/preproc_save_preset")
async def preproc_save_preset(body: PreprocPresetBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    name = check_name(body.name, "preset name")
    path = backend.data_root / PREPROC_PRESETS / f"{name}.json"
    await offload(atomic_write_text, path, json.dumps(body.pipeline.to_json_dict(), indent=2) + "\n")
    return {"ok": True, "name": name}


@router.get("/preproc_presets")
async def preproc_presets(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    folder = backend.data_root / PREPROC_PRESETS
    names = await offload(lambda: sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else [])
    return {"ok": True, "presets": names}


@router.get("/preproc_get_preset")
async def preproc_get_preset(name: str = Query(...), backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    path = backend.data_root / PREPROC_PRESETS / f"{check_name(name, 'preset name')}.json"
    if not await offload(path.is_file):
        raise HTTPException(404, f"no preprocessing preset named '{name}'")
    pipeline = await offload(PreprocPipeline.load, path)
    return {"ok": True, "name": name, "pipeline": pipeline.to_json_dict()}


# --- models ----------------------------------------------------------------------------------------

@router.get("/available_models")
async def available_models(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """The built-in detector, detector plugins and U-Net artifacts of the models directory."""
    models = await offload(list_models, backend.models_dir)
    return {"ok": True, "models": models, "selected": await backend.selection()}


async def _select(backend: Backend, model_id: str) -> dict[str, Any]:
    """Load ``model_id`` in a detector replica (so a broken model fails here) and make it current."""
    info = await backend.call(backend.detector.describe, model_id)
    selection = await backend.select("detector", model_id)
    if info.get("type") == "segmentation":  # a U-Net also serves /predict and /demo
        selection = await backend.select("segmentation", model_id)
    return {"ok": True, "model_info": info, "selected": selection}


@router.post("/load_model")
async def load_model(body: ModelBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    return await _select(backend, body.model_id)


@router.post("/select_model_folder")
async def select_model_folder(body: FolderBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Select a model folder; only folders inside the models directory are accepted."""
    folder = body.folder
    if os.path.isabs(folder):
        real, root = Path(folder).resolve(), backend.models_dir.resolve()
        if real != root and root not in real.parents:
            raise PathRejected(f"folder '{folder}' is not inside the models directory", status=403)
        folder = relative_to_root(root, real)
    _, info = await offload(resolve_model_folder, backend.models_dir, folder)
    return await _select(backend, info["id"])


# --- inference -------------------------------------------------------------------------------------

async def _detect(backend: Backend, image: np.ndarray, model_id: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = await backend.call(backend.detector.detect, model_id, image)
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
    result = await _detect(backend, image, await backend.detector_id(body.model_id))
    timings = {"load_s": loaded - start, **result.pop("timings"), "total_s": time.perf_counter() - start}
    return {"ok": True, "image": body.image_name, "image_url": image_url(body.image_name), **result,
            "timings": timings}


@router.post("/inference_compare")
async def inference_compare(body: CompareBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Inference on the original and on the preprocessed image, side by side."""
    start = time.perf_counter()
    image = await offload(backend.load_image, body.image_name)
    processed = await offload(apply_pipeline, image, body.pipeline)
    model_id = await backend.detector_id(body.model_id)
    original, after = await asyncio.gather(_detect(backend, image, model_id), _detect(backend, processed, model_id))
    return {"ok": True, "image": body.image_name, "original": original, "processed": after,
            "model_info": original["model_info"], "timings": {"total_s": time.perf_counter() - start}}


# --- system ----------------------------------------------------------------------------------------

def _system_info() -> dict[str, Any]:
    import ray
    from ray import serve

    deployments: dict[str, Any] = {}
    for app_name, app in serve.status().applications.items():
        for name, dep in app.deployments.items():
            deployments[name] = {"application": app_name, "status": str(dep.status.value),
                                 "replicas": {str(k.value if hasattr(k, "value") else k): v
                                              for k, v in dep.replica_states.items()}}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "cpu": {"count": os.cpu_count(), "load_avg": list(os.getloadavg())},
        "gpu": {"count": int(ray.cluster_resources().get("GPU", 0))},
        "ray": {"nodes": len(nodes), "cluster_resources": ray.cluster_resources(),
                "available_resources": ray.available_resources()},
        "deployments": deployments,
    }


@router.get("/system_info")
async def system_info() -> dict[str, Any]:
    """CPU/GPU, Ray cluster resources, and each deployment's replicas."""
    return {"ok": True, **await offload(_system_info)}
