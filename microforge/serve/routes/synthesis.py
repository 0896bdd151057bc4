"""Crystal synthesis: configs and presets, previews (spread over renderer replicas), batch jobs."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Union

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field, StrictBool

from microforge.platform.errors import ConfigError
from microforge.platform.storage import atomic_write_text

from ..backend import JOB_ID, Backend, RequestBody, count_files, get_backend, get_job, offload
from ..paths import check_name, check_relative, relative_to_root

router = APIRouter(tags=["synthesis"])

PRESET_DIR = "presets/synth"
STANDARD_FILE = "presets/synth_standard.json"
DATASETS_DIR = "datasets"


FONTS_DIR = "fonts"  # under the data root: the fonts a request may name, besides the package's
PACKAGE_FONTS = Path(__file__).resolve().parents[1] / "fonts"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def available_fonts(backend: Backend) -> dict[str, Path]:
    """Font file name -> path: the package's fonts, then the data root's ``fonts/`` (which shadow them)."""
    fonts: dict[str, Path] = {}
    for folder in (PACKAGE_FONTS, backend.data_root / FONTS_DIR):
        if folder.is_dir():
            fonts.update({p.name: p for p in sorted(folder.iterdir())
                          if p.suffix.lower() in FONT_SUFFIXES and p.is_file()})
    return fonts


def crystal_config(backend: Backend, config: Optional[dict[str, Any]]):
    """Validate a request's config (None = the saved standard or the defaults), cap its canvas
    and check its font: ``scalebar_ttf`` names one of :func:`available_fonts` (never a path)."""
    from microforge.datasets.crystals import CrystalConfig

    parsed = CrystalConfig.load(config) if config is not None else _default_config(backend)[0]
    cap = backend.limits.max_preview_pixels
    if parsed.width * parsed.height > cap:
        raise ConfigError(f"canvas {parsed.width}x{parsed.height} exceeds the server's limit of {cap} pixels "
                          "per image (limits.max_preview_pixels)")
    font_px = max(parsed.scalebar_font_px)
    if font_px > max(parsed.width, parsed.height):
        raise ConfigError(f"scalebar_font_px {font_px} exceeds the canvas ({parsed.width}x{parsed.height})")
    if parsed.scalebar_ttf is not None and parsed.scalebar_ttf not in available_fonts(backend):
        # The same answer whether or not such a file exists anywhere: no file-existence oracle.
        names = ", ".join(available_fonts(backend)) or "none"
        raise ConfigError(f"scalebar_ttf '{str(parsed.scalebar_ttf)[:100]}' is not an available font (available: "
                          f"{names}); put .ttf/.otf files in <data root>/{FONTS_DIR}/ and give the file name")
    return parsed


def render_config(backend: Backend, config) -> dict[str, Any]:
    """A checked config as the renderer takes it: the font's file name replaced by its path."""
    data = config.to_json_dict()
    if data.get("scalebar_ttf"):
        data["scalebar_ttf"] = str(available_fonts(backend)[data["scalebar_ttf"]])
    return data


def _default_config(backend: Backend):
    from microforge.datasets.crystals import CrystalConfig

    standard = backend.data_root / STANDARD_FILE
    if standard.is_file():
        return CrystalConfig.load(standard), "standard"
    return CrystalConfig(), "defaults"


def _save_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class ConfigBody(RequestBody):
    config: dict[str, Any] = Field(..., description="A CrystalConfig (missing keys take their defaults).")


class PresetBody(ConfigBody):
    name: str = Field(..., description="Preset name: letters, digits, '_', '-', '.'.")


class PreviewBody(RequestBody):
    t: float = Field(0.5, ge=0, le=1, description="Growth stage in [0, 1] (0 = lambda 0.1, 1 = lambda 10).")
    config: Optional[dict[str, Any]] = Field(None, description="CrystalConfig; none = the standard or defaults.")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="Random seed; none = a fresh one.")
    return_obbs: StrictBool = False
    quality: int = Field(85, ge=1, le=100, description="JPEG quality.")


class BulkRow(RequestBody):
    id: Union[str, int]
    t: float = Field(..., ge=0, le=1)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)


class BulkBody(RequestBody):
    rows: list[BulkRow] = Field(..., min_length=1)
    config: Optional[dict[str, Any]] = None
    quality: int = Field(85, ge=1, le=100)
    return_obbs: StrictBool = False


class BatchBody(RequestBody):
    config: Optional[dict[str, Any]] = None
    n_images: int = Field(..., ge=1)
    out_dir: str = Field(..., description=f"Dataset folder, relative to <data root>/{DATASETS_DIR}.")
    seed_base: int = Field(0, ge=0, le=2**63 - 1)
    lambda_range: Optional[tuple[float, float]] = Field(None, description="Overrides stage_lambda_range.")


class JobBody(RequestBody):
    job_id: str = Field(..., pattern=JOB_ID)


@router.get("/synth_default_config")
async def synth_default_config(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """The saved standard config (``source: standard``) or the renderer's defaults (``source: defaults``)."""
    config, source = await offload(_default_config, backend)
    return {"ok": True, "config": config.to_json_dict(), "source": source}


@router.get("/synth_config_schema")
async def synth_config_schema() -> dict[str, Any]:
    """The JSON schema of CrystalConfig (field docs, ranges), to generate forms from."""
    from microforge.datasets.crystals import CrystalConfig

    return {"ok": True, "schema": CrystalConfig.model_json_schema()}


@router.post("/synth_save_standard")
async def synth_save_standard(body: ConfigBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    config = await offload(crystal_config, backend, body.config)
    await offload(_save_json, backend.data_root / STANDARD_FILE, config.to_json_dict())
    return {"ok": True, "config": config.to_json_dict()}


@router.post("/synth_save_preset")
async def synth_save_preset(body: PresetBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    name = check_name(body.name, "preset name")
    config = await offload(crystal_config, backend, body.config)
    await offload(_save_json, backend.data_root / PRESET_DIR / f"{name}.json", config.to_json_dict())
    return {"ok": True, "name": name}


def _user_presets(backend: Backend) -> list[str]:
    folder = backend.data_root / PRESET_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


@router.get("/synth_presets")
async def synth_presets(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Saved presets, then the shipped ones (a saved preset shadows a shipped one of the same name)."""
    from microforge.datasets.crystals import preset_names

    user = await offload(_user_presets, backend)
    builtin = [n for n in preset_names() if n not in user]
    return {"ok": True, "presets": user + builtin, "user": user, "builtin": builtin}


@router.get("/synth_get_preset")
async def synth_get_preset(name: str = Query(...), backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    from microforge.datasets.crystals import load_preset, preset_names

    name = check_name(name, "preset name")
    path = backend.data_root / PRESET_DIR / f"{name}.json"
    if await offload(path.is_file):
        config, source = await offload(load_preset, path), "user"
    elif name in preset_names():
        config, source = await offload(load_preset, name), "builtin"
    else:
        raise HTTPException(404, f"no preset named '{name}'")
    return {"ok": True, "name": name, "source": source, "config": config.to_json_dict()}


@router.post("/synth_preview")
async def synth_preview(body: PreviewBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Render one image at stage ``t``: a JPEG data URL, timings and optionally the oriented boxes."""
    config = await offload(crystal_config, backend, body.config)
    seed = secrets.randbelow(2**31) if body.seed is None else body.seed
    rendered = await offload(render_config, backend, config)
    result = await backend.call(backend.handle("render").preview, rendered, body.t, seed, body.quality,
                                body.return_obbs)
    return {"ok": True, **result}


@router.post("/synth_preview_bulk")
async def synth_preview_bulk(body: BulkBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Render several rows concurrently, one renderer call per row, so replicas share the work."""
    if len(body.rows) > backend.limits.max_bulk_rows:
        raise HTTPException(422, f"{len(body.rows)} rows; at most {backend.limits.max_bulk_rows} per request")
    ids = [str(row.id) for row in body.rows]
    if len(set(ids)) != len(ids):
        raise HTTPException(422, "row ids must be unique")
    config = await offload(render_config, backend, await offload(crystal_config, backend, body.config))
    seeds = {i: secrets.randbelow(2**31) if row.seed is None else row.seed for i, row in zip(ids, body.rows)}
    start = time.perf_counter()
    results = await asyncio.gather(*(
        backend.call(backend.handle("render").preview, config, row.t, seeds[i], body.quality, body.return_obbs)
        for i, row in zip(ids, body.rows)))
    by_id = dict(zip(ids, results))
    return {"ok": True, "images": {i: r["image_b64"] for i, r in by_id.items()},
            "obbs": {i: r.get("obbs", []) for i, r in by_id.items()} if body.return_obbs else {},
            "timings": {i: r["timings"] for i, r in by_id.items()}, "seeds": seeds,
            "sizes": {i: [r["width"], r["height"]] for i, r in by_id.items()},
            "replicas": sorted({r["replica"] for r in results}), "total_s": time.perf_counter() - start}


@router.post("/synth_batch")
async def synth_batch(body: BatchBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Start rendering a dataset with Ray Data as a background job; poll ``/synth_batch_status``.
    409 while another job still writes the same ``out_dir``."""
    if body.n_images > backend.limits.max_batch_images:
        raise HTTPException(422, f"n_images {body.n_images} exceeds the limit of {backend.limits.max_batch_images}")
    config = await offload(crystal_config, backend, body.config)
    if body.lambda_range is not None:
        config = config.model_copy(update={"stage_lambda_range": body.lambda_range})
        config = type(config).load(config.to_json_dict())  # re-validate the override's range
    datasets = backend.data_root / DATASETS_DIR
    await offload(datasets.mkdir, parents=True, exist_ok=True)
    check_relative(body.out_dir, "out_dir")  # before joining, which would hide a leading '/'
    out = backend.data_path(f"{DATASETS_DIR}/{body.out_dir}", what="out_dir")
    if out == datasets.resolve():
        raise HTTPException(400, "out_dir must name a folder")
    job_id = uuid.uuid4().hex
    record = {"out": str(out), "out_dir": relative_to_root(backend.data_root, out), "total": body.n_images}
    kwargs = {"config": await offload(render_config, backend, config), "n": body.n_images, "out": str(out), "seed": body.seed_base,
              "workers": backend.config.synth_workers}
    await backend.state.start_job.remote(job_id, "synth", record, "run_synth_job", kwargs,
                                         backend.limits.job_timeout_s)
    return {"ok": True, "job_id": job_id, "out_dir": record["out_dir"], "total": body.n_images}


@router.get("/synth_batch_status")
async def synth_batch_status(job_id: str = Query(..., pattern=JOB_ID),
                             backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """State (running/done/failed/cancelled), images done of total, images per second, errors."""
    job = await get_job(backend, job_id, "synth")
    done = min(job["total"], await offload(count_files, Path(job["out"]) / "meta", "*.json"))
    elapsed = (job["finished_at"] or time.time()) - job["started_at"]
    return {"ok": True, "job_id": job_id, "state": job["state"], "done": done, "total": job["total"],
            "percent": 100.0 * done / job["total"], "images_per_s": done / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed, "errors": job["errors"], "out_dir": job["out_dir"], "result": job["result"]}


@router.post("/synth_batch_cancel")
async def synth_batch_cancel(body: JobBody, backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    await get_job(backend, body.job_id, "synth")
    job = await backend.state.cancel_job.remote(body.job_id)
    return {"ok": True, "job_id": body.job_id, "state": job["state"]}
