"""What the HTTP routes share: settings, deployment handles, the state actor, and helpers for
offloading CPU work, retrying calls to replicas that died, and reading/writing under the data root."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
from fastapi import HTTPException, Request, UploadFile
from pydantic import BaseModel, ConfigDict

from microforge.platform.errors import MicroforgeError
from microforge.platform.storage import atomic_write_bytes

from .config import ServeConfig
from .images import IMAGE_SUFFIXES, decode_image, detection_stats, draw_overlay, encode
from .discovery import newest_model
from .paths import resolve_inside
from .tasks import get_task

log = logging.getLogger(__name__)

T = TypeVar("T")

# Calls to a replica that died mid-request are retried this many times (with backoff): Serve
# re-routes new requests away from a dead replica, but one already accepted fails with
# ActorDiedError, so the ingress retries it (every backend call is idempotent).
RETRIES = 3
_KEEP_GENERATED = 1000  # newest overlays kept per folder
JOB_ID = r"^[0-9a-f]{32}$"
_SELECTION_POLL_S = 10.0


class RequestBody(BaseModel):
    """Base of JSON request bodies: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")


class ServiceUnavailable(MicroforgeError):
    status = 503


class DeadlinePassed(MicroforgeError):
    status = 504


async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run CPU or disk work in a worker thread so the event loop stays free."""
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def unwrap(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task error (a replica raised it)."""
    import ray

    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


def prune(folder: Path, keep: int = _KEEP_GENERATED) -> None:
    """Keep the ``keep`` newest generated files of ``folder`` (names start with a time stamp)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    for name in names[:-keep] if len(names) > keep else []:
        (folder / name).unlink(missing_ok=True)


def generated_name(suffix: str) -> str:
    """A unique, time-ordered file name."""
    return f"{time.time_ns()}-{secrets.token_hex(4)}{suffix}"


@dataclass
class Backend:
    """Everything a route needs; one per ingress replica (``request.app.state.backend``)."""

    config: ServeConfig
    handles: dict[str, Any]  # Serve task name -> DeploymentHandle of its deployment (see serve.tasks)
    state: Any  # ActorHandle of ServeState
    _newest: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # task -> (when, id)
    _selection: tuple[int, dict[str, Any]] = field(default=(-1, {}))  # (version, selection)
    _selection_watch: asyncio.Task | None = None

    @property
    def data_root(self) -> Path:
        return Path(self.config.data_root)

    @property
    def models_dir(self) -> Path:
        return Path(self.config.models_dir)

    @property
    def limits(self):
        return self.config.limits

    def handle(self, task: str) -> Any:
        """The deployment handle of Serve task ``task``."""
        return self.handles[task]

    async def call(self, method: Any, *args: Any) -> Any:
        """``await method.remote(*args)``, retried when the replica died; replica errors re-raised as-is.

        Raises:
            DeadlinePassed: no answer within ``limits.request_timeout_s`` (the call is cancelled,
                as it is when the client disconnects and Serve cancels this request).
        """
        import ray

        timeout = self.limits.request_timeout_s
        for attempt in range(RETRIES + 1):
            response = method.remote(*args)
            try:
                return await asyncio.wait_for(_awaited(response), timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
                _cancel(response)  # stop the replica's work (a batched call leaves its batch)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise DeadlinePassed(f"no answer within {timeout:g} s (limits.request_timeout_s)") from None
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if attempt == RETRIES:
                    raise ServiceUnavailable(f"the backend is unavailable ({type(exc).__name__}); retry shortly") \
                        from None
                log.warning("backend call failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.2 * 2**attempt)
            except ray.exceptions.RayTaskError as exc:
                cause = unwrap(exc)
                if isinstance(cause, MicroforgeError):
                    raise cause from None
                raise

    # --- model selection: the state actor holds it; this replica keeps a copy that a long poll
    # refreshes the moment it changes (see microforge.serve.state) ------------------------------

    async def selection(self) -> dict[str, Any]:
        if self._selection_watch is None or self._selection_watch.done():
            self._selection_watch = asyncio.get_running_loop().create_task(self._watch_selection())
        if self._selection[0] < 0:  # no copy yet, or the poll failed: ask (503 if the actor is gone)
            self._apply_selection(*await self.call(self.state.wait_selection, -1, 0.0))
        return dict(self._selection[1])

    async def select(self, role: str, model_id: str | None) -> dict[str, Any]:
        version, selection = await self.state.set_selection.remote(role, model_id)
        self._apply_selection(version, selection)
        return selection

    def _apply_selection(self, version: int, selection: dict[str, Any]) -> None:
        # Versions only grow; a reply that overtook a newer one (select vs. the poll) is dropped.
        if version >= self._selection[0]:
            self._selection = (version, selection)

    async def _watch_selection(self) -> None:
        while True:
            try:
                version, selection = await self.state.wait_selection.remote(self._selection[0], _SELECTION_POLL_S)
            except Exception as exc:  # a failed poll must not end the loop
                log.warning("polling the model selection failed (%s); retrying", type(exc).__name__)
                self._selection = (-1, {})  # requests meanwhile ask the actor themselves
                await asyncio.sleep(1.0)
                continue
            self._apply_selection(version, selection)

    async def model_id(self, task: str, requested: str | None = None) -> str:
        """The model a request of ``task`` runs: the requested one, else the selected one, else
        the configured default (``default_models``), else the task's newest artifact."""
        if requested:
            return requested
        spec = get_task(task)
        chosen = (await self.selection()).get(spec.role or "") or self.config.default_models.get(task)
        if chosen:
            return chosen
        stamp, newest = self._newest.get(task, (0.0, None))
        if time.monotonic() - stamp > 5.0:
            newest = await offload(newest_model, self.models_dir, task)
            self._newest[task] = (time.monotonic(), newest)
        if newest is None:
            raise ServiceUnavailable(f"no {task} model: put an artifact of task '{task}' in {self.models_dir} "
                                     f"or set default_models.{task} in the serve config")
        return newest

    # --- files under the data root -----------------------------------------------------------

    def data_path(self, name: str, *, what: str = "name", must_exist: bool = False) -> Path:
        return resolve_inside(self.data_root, name, what=what, must_exist=must_exist)

    def image_path(self, name: str) -> Path:
        """An existing image file under the data root named by a request."""
        path = self.data_path(name, what="image_name", must_exist=True)
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise HTTPException(404, f"'{name}' is not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
        return path

    def load_image(self, name: str) -> np.ndarray:
        """Decode an image named by a request (call through :func:`offload`)."""
        return decode_image(self.image_path(name).read_bytes(), max_side=self.limits.max_image_side,
                            max_pixels=self.limits.max_image_pixels)

    def save_overlay(self, folder: str, image: np.ndarray, detections: list[dict[str, Any]]) -> tuple[str, dict]:
        """Draw the detections on the image, store it (JPEG) under ``folder`` of the data root, and
        return its name and the detections' statistics (call through :func:`offload`)."""
        name = f"{folder}/{generated_name('.jpg')}"
        atomic_write_bytes(self.data_root / name, encode(draw_overlay(image, detections), ".jpg"))
        prune(self.data_root / folder)
        return name, detection_stats(detections)

    async def read_upload(self, file: UploadFile, cap: int | None = None) -> bytes:
        """The uploaded file's bytes; 413 past the upload cap (read in chunks, never whole first)."""
        cap = cap or self.limits.max_upload_bytes
        chunks, size = [], 0
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > cap:
                raise HTTPException(413, f"'{file.filename}' is larger than the {cap}-byte upload limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def decode_upload(self, file: UploadFile) -> np.ndarray:
        data = await self.read_upload(file)
        return await offload(decode_image, data, max_side=self.limits.max_image_side,
                             max_pixels=self.limits.max_image_pixels)


async def _awaited(response: Any) -> Any:
    return await response


def _cancel(response: Any) -> None:
    """Cancel a deployment call (``DeploymentResponse.cancel``) or an actor call (an ObjectRef)."""
    import ray

    try:
        if hasattr(response, "cancel"):
            response.cancel()
        elif isinstance(response, ray.ObjectRef):
            ray.cancel(response)
    except Exception as exc:  # noqa: BLE001 - best effort: the call may have finished meanwhile
        log.debug("cannot cancel a backend call: %s", exc)


def check_infer_pixels(backend: "Backend", image: np.ndarray) -> None:
    """413 when ``image`` has more pixels than a model replica accepts (``limits.max_infer_pixels``)."""
    height, width = image.shape[:2]
    cap = backend.limits.max_infer_pixels
    if width * height > cap:
        raise HTTPException(413, f"image is {width}x{height}; models accept at most {cap} pixels "
                                 "(limits.max_infer_pixels)")


def count_files(folder: Path, pattern: str) -> int:
    """How many files in ``folder`` match ``pattern`` (a job's progress markers)."""
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


async def get_job(backend: Backend, job_id: str, kind: str) -> dict[str, Any]:
    """The state actor's record of a job of ``kind``; 404 if there is none."""
    job = await backend.state.job.remote(job_id)
    if job is None or job["kind"] != kind:
        raise HTTPException(404, f"no {kind} job '{job_id}'")
    return job


def image_url(name: str) -> str:
    """The URL at which ``GET /get_image`` serves a data-root image."""
    from urllib.parse import quote

    return f"/get_image?name={quote(name)}"


def get_backend(request: Request) -> Backend:
    return request.app.state.backend
