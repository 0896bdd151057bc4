"""Time-lapse analysis: upload a folder of frames, inspect it, analyse it with Ray Data, read the result."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import Field

from microforge.platform.storage import atomic_write_bytes

from ..backend import JOB_ID, Backend, RequestBody, count_files, get_backend, get_job, image_url, offload
from ..images import IMAGE_SUFFIXES, ImageRejected, PreprocPipeline, decode_image
from ..paths import check_name, check_relative, relative_to_root

router = APIRouter(tags=["time-lapse"])

TIMELAPSE_DIR = "timelapse"
OUTPUTS_DIR = "outputs"
_LISTED = 50


def natural_key(name: str) -> list[Any]:
    """Sort key that puts frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: Path) -> list[Path]:
    """Image files below ``folder`` (symlinks leaving it skipped), in natural order of their paths."""
    root = folder.resolve()
    frames = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
              and root in p.resolve().parents]
    return sorted(frames, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def _dataset_folder(backend: Backend, dataset_path: str) -> Path:
    folder = backend.data_path(dataset_path, what="dataset_path", must_exist=True)
    if not folder.is_dir():
        raise HTTPException(404, f"dataset_path '{dataset_path}' is not a folder")
    return folder


_FOLDER_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "Frames; each file name is its path relative to the folder "
                                 "(at most limits.max_folder_files)."},
        "folder": {"type": "string", "description": "Name of the folder to create."}}}}}}}


async def _folder_form(request: Request, max_files: int):
    """The multipart form, parsed with the configured file limit (Starlette's own is 1000)."""
    try:
        return await request.form(max_files=max_files, max_fields=16)
    except StarletteHTTPException as exc:  # Starlette's multipart limits answer 400 "Too many files ..."
        if "Too many files" in str(exc.detail):
            raise HTTPException(413, f"more than {max_files} files; at most {max_files} per upload "
                                     "(limits.max_folder_files)") from None
        raise


@router.post("/outputs_upload_folder", openapi_extra=_FOLDER_FORM)
async def outputs_upload_folder(request: Request, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Store a folder of frames under ``timelapse/`` keeping their relative paths; files without an
    image suffix are skipped, and files whose content is not an acceptable image (checked like
    ``/upload``) are reported in ``rejected``."""
    limits = backend.limits
    form = await _folder_form(request, limits.max_folder_files)
    files = [f for f in form.getlist("files") if isinstance(f, StarletteUpload)]
    folder = form.get("folder")
    if not files:
        raise HTTPException(422, "files: at least one file is required")
    if folder is not None and not isinstance(folder, str):
        raise HTTPException(422, "folder must be a text field")
    base = f"{TIMELAPSE_DIR}/{check_name(folder, 'folder') if folder else uuid.uuid4().hex[:12]}"
    saved, skipped, rejected = [], [], []
    for file in files:
        rel = check_relative(file.filename or "", "file name")
        if rel.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(file.filename)
            continue
        target = backend.data_path(f"{base}/{rel.as_posix()}", what="file name")
        data = await backend.read_upload(file)
        try:
            await offload(decode_image, data, max_side=limits.max_image_side, max_pixels=limits.max_image_pixels)
        except ImageRejected as exc:
            rejected.append({"name": rel.as_posix(), "status": exc.status, "detail": str(exc)})
            continue
        await offload(atomic_write_bytes, target, data)
        saved.append(rel.as_posix())
    if not saved:
        raise HTTPException(415, f"no acceptable image files among the {len(files)} uploaded "
                                 f"(accepted: {', '.join(IMAGE_SUFFIXES)})")
    return {"ok": True, "dataset_path": base, "saved": len(saved), "skipped": skipped, "rejected": rejected}


def _inspect(folder: Path) -> dict[str, Any]:
    from PIL import Image

    readable, zero_size, unreadable = [], [], []
    for path in list_frames(folder):
        name = path.relative_to(folder).as_posix()
        if path.stat().st_size == 0:
            zero_size.append(name)
            continue
        try:
            with Image.open(path) as image:
                image.verify()
            readable.append(name)
        except Exception:  # any decoder complaint makes the frame unreadable
            unreadable.append(name)
    return {"total": len(readable) + len(zero_size) + len(unreadable), "readable": len(readable),
            "zero_size": len(zero_size), "unreadable": len(unreadable), "files": readable[:_LISTED],
            "zero_size_files": zero_size[:_LISTED], "unreadable_files": unreadable[:_LISTED]}


@router.get("/outputs_inspect_dataset")
async def outputs_inspect_dataset(dataset_path: str = Query(...),
                                  backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """How many frames are readable, empty or unreadable."""
    folder = await offload(_dataset_folder, backend, dataset_path)
    return {"ok": True, "dataset_path": dataset_path, **await offload(_inspect, folder)}


class RunBody(RequestBody):
    dataset_path: str
    pipeline: PreprocPipeline = Field(default_factory=PreprocPipeline)
    model_folder: Optional[str] = Field(None, description="A model id from /available_models; default: selected.")


@router.post("/outputs_run_batch_start")
async def outputs_run_batch_start(body: RunBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Analyse every frame with Ray Data (preprocess, detect, overlay) as a background job."""
    from ..jobs import frame_times

    def frames_of(folder: Path) -> tuple[list[Path], list[str], list[float]]:
        frames = list_frames(folder)
        names = [p.relative_to(folder).as_posix() for p in frames]
        return frames, names, frame_times(names)

    folder = await offload(_dataset_folder, backend, body.dataset_path)
    frames, names, times = await offload(frames_of, folder)
    if not frames:
        raise HTTPException(422, f"no image files in '{body.dataset_path}'")
    if len(frames) > backend.limits.max_folder_files:
        raise HTTPException(413, f"{len(frames)} frames; at most {backend.limits.max_folder_files} per run")
    model_id = await backend.model_id("detect", body.model_folder)
    # a model that cannot load fails now, not per frame
    await backend.call(backend.handle("detect").describe, model_id)
    items = [{"index": i, "name": n, "path": str(p), "time": t}
             for i, (n, p, t) in enumerate(zip(names, frames, times))]
    job_id = uuid.uuid4().hex
    out = backend.data_root / OUTPUTS_DIR / job_id
    record = {"out": str(out), "total": len(items), "dataset_path": body.dataset_path, "model_id": model_id}
    kwargs = {"frames": items, "models_dir": str(backend.models_dir), "model_id": model_id,
              "pipeline": body.pipeline.to_json_dict(), "out": str(out),
              "url_prefix": image_url(relative_to_root(backend.data_root, out)),
              "workers": min(backend.config.timelapse_workers, len(items)),
              "max_side": backend.limits.max_image_side, "max_pixels": backend.limits.max_image_pixels}
    await backend.state.start_job.remote(job_id, "timelapse", record, "run_timelapse_job", kwargs,
                                         backend.limits.job_timeout_s)
    return {"ok": True, "job_id": job_id, "total": len(items), "model_id": model_id}


async def _timelapse_job(backend: Backend, job_id: Optional[str]) -> dict[str, Any]:
    if job_id is None:
        job_id = await backend.state.latest_job.remote("timelapse")
        if job_id is None:
            raise HTTPException(404, "no time-lapse run has been started")
    return await get_job(backend, job_id, "timelapse")


@router.get("/outputs_run_batch_status")
async def outputs_run_batch_status(job_id: Optional[str] = Query(None, pattern=JOB_ID),
                                   backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """``{status, processed, total, percent, message}`` of a run (default: the latest)."""
    job = await _timelapse_job(backend, job_id)
    processed = min(job["total"], await offload(count_files, Path(job["out"]) / "frames", "*.json"))
    message = ("; ".join(job["errors"]) if job["errors"]
               else f"{processed}/{job['total']} frames analysed" + (" (cancelled)" if job["state"] == "cancelled"
                                                                     else ""))
    return {"ok": True, "job_id": job["job_id"], "status": job["state"], "processed": processed,
            "total": job["total"], "percent": 100.0 * processed / job["total"], "message": message}


@router.get("/outputs_run_batch_result")
async def outputs_run_batch_result(job_id: Optional[str] = Query(None, pattern=JOB_ID),
                                   backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Per-time summary (means, standard deviations, 20-bin histograms) and per-image stats with overlays."""
    job = await _timelapse_job(backend, job_id)
    if job["state"] != "done":
        raise HTTPException(409, f"run {job['job_id']} is {job['state']}, not done")
    result = await offload(lambda: json.loads((Path(job["out"]) / "result.json").read_text()))
    return {"ok": True, "job_id": job["job_id"], "dataset_path": job["dataset_path"], **result}


@router.post("/outputs_run_batch_cancel")
async def outputs_run_batch_cancel(job_id: Optional[str] = Query(None, pattern=JOB_ID),
                                   backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    job = await _timelapse_job(backend, job_id)
    job = await backend.state.cancel_job.remote(job["job_id"])
    return {"ok": True, "job_id": job["job_id"], "status": job["state"]}

