"""Images: uploads, serving files, preprocessing and its presets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import Field

from microforge.platform.storage import atomic_write_bytes, atomic_write_text, write_new_file

from ..backend import Backend, RequestBody, get_backend, image_url, offload
from ..images import (MEDIA_TYPES, OPERATIONS, PreprocPipeline, apply_operation, apply_pipeline, decode_image,
                      encode, jpeg_b64, probe_image)
from ..paths import check_name

router = APIRouter(tags=["images"])

UPLOADS = "uploads"
PREPROCESSED = "preprocessed"
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
