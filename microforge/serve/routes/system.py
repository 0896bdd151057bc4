"""Health, the system overview, and the models: listing and selection (over the task table)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from ..backend import Backend, RequestBody, get_backend, offload
from ..discovery import ModelError, describe_model, list_models, resolve_model_folder
from ..paths import PathRejected, relative_to_root
from ..tasks import TASKS, get_task, tasks_taking

router = APIRouter(tags=["system and models"])


class ModelBody(RequestBody):
    model_id: str = Field(..., description="An id from /available_models.")


class FolderBody(RequestBody):
    folder: str = Field(..., description="A folder inside the models directory (relative, or absolute within it).")


@router.get("/health")
async def health(backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Status, device and the models each task's replicas loaded; ``batching`` shows the batch
    sizes one replica of each batching task has run (top-level keys: the first such task, segment)."""
    selection = await backend.selection()
    model_tasks = [task for task in TASKS if task.loaded_key]
    try:
        found = await asyncio.wait_for(asyncio.gather(
            *(backend.call(backend.handle(task.name).stats) for task in model_tasks)), timeout=10)
        status = "ok"
    except Exception:  # a timeout or a failing replica: health reports it rather than failing
        found, status = [{} for _ in model_tasks], "degraded"
    stats = {task.name: result for task, result in zip(model_tasks, found)}
    settings = backend.config.deployments
    batching = {task.name: {"max_batch_size": settings[task.deployment].max_batch_size,
                            "batch_wait_timeout_s": settings[task.deployment].batch_wait_timeout_s,
                            **{k: v for k, v in stats[task.name].items() if k != "loaded"}}
                for task in model_tasks if task.batched}
    gpu = any(settings[task.deployment].ray_actor_options.num_gpus > 0 for task in model_tasks)
    return {"ok": True, "status": status, "device": "cuda" if gpu else "cpu",
            "models": {"selected": selection,
                       **{task.loaded_key: stats[task.name].get("loaded", []) for task in model_tasks}},
            "batching": {**next(iter(batching.values()), {}), "tasks": batching}}


@router.get("/available_models")
async def available_models(task: Optional[str] = Query(None, description="Only the models this Serve task runs."),
                           backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """The built-in detector, detector plugins and the artifacts of the models directory, each
    with its ``type`` and ``task``."""
    models = await offload(list_models, backend.models_dir)
    if task is not None:
        try:
            accepts = get_task(task).accepts
        except KeyError as exc:
            raise ModelError(str(exc.args[0]), 404) from None
        models = [m for m in models if m["task"] in accepts]
    return {"ok": True, "models": models, "selected": await backend.selection()}


async def _select(backend: Backend, model_id: str) -> dict[str, Any]:
    """Load ``model_id`` in a replica of the first task that runs it (so a broken model fails
    here) and select it for every task that runs it (a U-Net segments and detects)."""
    listed = await offload(describe_model, backend.models_dir, model_id)
    takers = [task for task in tasks_taking(listed["task"]) if task.role]
    if not takers:
        raise ModelError(f"model '{model_id}' ({listed['task']}) is run by no deployment")
    info = await backend.call(backend.handle(takers[0].name).describe, model_id)
    selection: dict[str, Any] = {}
    for task in takers:
        selection = await backend.select(task.role, model_id)
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
