"""Shared server state in one named, detached Ray actor: model selection, background jobs, live frames.

Every ingress replica talks to the same actor, so a job started through one replica is seen,
polled and cancelled through any other, and a frame posted to one replica reaches WebSocket
clients connected to all of them.

Live broadcast: the actor keeps a version counter and the last frame. Each ingress replica runs
one background task that long-polls :meth:`ServeState.wait_live` (an asyncio condition wakes it
at once when a frame arrives, else it returns after a timeout and polls again) and pushes every
new version to the WebSocket clients connected to that replica. The model selection is
versioned the same way (:meth:`ServeState.wait_selection`), so each ingress replica keeps a copy
that a change reaches at once, without a call to this actor on every request.

Jobs are Ray tasks the actor itself submits, so the actor owns them: they outlive the ingress
replica that asked for them, and cancellation works from any replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import PurePath
from typing import Any

import ray

from microforge.platform.errors import MicroforgeError

log = logging.getLogger(__name__)


class JobConflict(MicroforgeError):
    """A job would write a folder that a running job writes (HTTP 409)."""

    status = 409


NAMESPACE = "microforge"
_HISTORY = 500
_FINAL_STATES = ("done", "failed", "cancelled")
# A cancelled job that ignores the interrupt this long is killed outright.
_CANCEL_GRACE_S = 10.0


@ray.remote(num_cpus=0)
class ServeState:
    """The server's shared state; see the module docstring."""

    def __init__(self, selection: dict[str, str | None]) -> None:
        self.selection: dict[str, str | None] = dict(selection)  # role -> model id (see serve.tasks)
        self.selection_version = 0
        self.selection_changed = asyncio.Condition()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, ray.ObjectRef] = {}
        self.latest: dict[str, str] = {}
        self.live_version = 0
        self.live_last: dict[str, Any] | None = None
        self.live_history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self.live_changed = asyncio.Condition()

    async def ping(self) -> bool:
        return True

    # --- model selection ---------------------------------------------------------------------

    async def set_selection(self, role: str, model_id: str | None) -> tuple[int, dict[str, str | None]]:
        """Select the model for ``role``; returns the new ``(version, selection)``."""
        if role not in self.selection:
            raise ValueError(f"unknown role '{role}'")
        async with self.selection_changed:
            self.selection[role] = model_id
            self.selection_version += 1
            self.selection_changed.notify_all()
        return self.selection_version, dict(self.selection)

    async def wait_selection(self, known: int, timeout_s: float) -> tuple[int, dict[str, str | None]]:
        """Return ``(version, selection)`` as soon as the version exceeds ``known``, or after ``timeout_s``."""
        async with self.selection_changed:
            await _wait(self.selection_changed, lambda: self.selection_version > known, timeout_s)
            return self.selection_version, dict(self.selection)

    # --- jobs --------------------------------------------------------------------------------

    async def start_job(self, job_id: str, kind: str, record: dict[str, Any], task: str,
                        kwargs: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Submit ``microforge.serve.jobs.<task>`` with ``kwargs`` and track it as ``job_id``; a job
        still running after ``timeout_s`` is cancelled (its errors say so).

        Raises:
            JobConflict: a job whose task is still running writes the same folder (``record["out"]``);
                checked here, in the one actor, so two replicas cannot both start one.
        """
        from . import jobs

        writing = next((job for job in self.jobs.values()
                        if job["job_id"] in self.refs and _overlap(job.get("out"), record.get("out"))), None)
        if writing is not None:
            raise JobConflict(f"job {writing['job_id']} ({writing['state']}) is still writing "
                              f"'{writing.get('out_dir', '')}'; wait until it has stopped")
        remote_fn = getattr(jobs, task)
        ref = remote_fn.remote(**kwargs)
        self.refs[job_id] = ref
        self.jobs[job_id] = {**record, "job_id": job_id, "kind": kind, "state": "running",
                             "started_at": time.time(), "finished_at": None, "errors": [], "result": None}
        self.latest[kind] = job_id
        asyncio.get_running_loop().create_task(self._watch(job_id, ref))
        if timeout_s is not None:
            asyncio.get_running_loop().create_task(self._deadline(job_id, timeout_s))
        return dict(self.jobs[job_id])

    async def _deadline(self, job_id: str, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)
        if job_id in self.refs and self.jobs[job_id]["state"] not in _FINAL_STATES:
            self.jobs[job_id]["errors"].append(f"cancelled: still running after {timeout_s:g} s "
                                               "(limits.job_timeout_s)")
            await self.cancel_job(job_id)

    async def _watch(self, job_id: str, ref: ray.ObjectRef) -> None:
        job = self.jobs[job_id]
        try:
            job["result"] = await ref
            if job["state"] != "cancelled":
                job["state"] = "done"
        except (ray.exceptions.TaskCancelledError, asyncio.CancelledError):
            job["state"] = "cancelled"
        except Exception as exc:  # the job's own failure: record it for the status endpoint
            if job["state"] != "cancelled":
                job["state"] = "failed"
                cause = getattr(exc, "cause", None) or exc
                job["errors"].append(f"{type(cause).__name__}: {cause}")
        finally:
            job["finished_at"] = time.time()
            self.refs.pop(job_id, None)

    async def job(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        return dict(job) if job is not None else None

    async def latest_job(self, kind: str) -> str | None:
        return self.latest.get(kind)

    async def cancel_job(self, job_id: str) -> dict[str, Any] | None:
        """Interrupt the job's task and its children; kill it if it has not stopped after a grace period."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        ref = self.refs.get(job_id)
        if job["state"] not in _FINAL_STATES and ref is not None:
            job["state"] = "cancelled"
            ray.cancel(ref, recursive=True)
            asyncio.get_running_loop().create_task(self._force_cancel(job_id, ref))
        return dict(job)

    async def _force_cancel(self, job_id: str, ref: ray.ObjectRef) -> None:
        await asyncio.sleep(_CANCEL_GRACE_S)
        if job_id in self.refs:
            log.warning("job %s ignored cancellation for %.0f s; killing it", job_id, _CANCEL_GRACE_S)
            ray.cancel(ref, force=True, recursive=True)

    # --- live frames -------------------------------------------------------------------------

    async def push_live(self, last: dict[str, Any]) -> int:
        async with self.live_changed:
            self.live_version += 1
            self.live_last = last
            self.live_history.append(last)
            self.live_changed.notify_all()
        return self.live_version

    async def wait_live(self, after: int, timeout_s: float) -> tuple[int, dict[str, Any] | None]:
        """Return ``(version, last)`` as soon as the version exceeds ``after``, or after ``timeout_s``."""
        async with self.live_changed:
            await _wait(self.live_changed, lambda: self.live_version > after, timeout_s)
            return self.live_version, self.live_last

    async def live_snapshot(self, history: int = 100) -> dict[str, Any]:
        items = list(self.live_history)[-history:] if history > 0 else []
        return {"version": self.live_version, "last": self.live_last, "history": items}


def _overlap(a: str | None, b: str | None) -> bool:
    """Whether two output folders are the same or one holds the other."""
    if not a or not b:
        return False
    a_path, b_path = PurePath(a), PurePath(b)
    return a_path == b_path or a_path in b_path.parents or b_path in a_path.parents


async def _wait(condition: asyncio.Condition, predicate, timeout_s: float) -> None:
    """Wait (holding ``condition``) until ``predicate()`` holds or ``timeout_s`` has passed."""
    try:
        await asyncio.wait_for(condition.wait_for(predicate), timeout_s)
    except asyncio.TimeoutError:
        pass


def get_state(name: str, selection: dict[str, str | None]) -> "ray.actor.ActorHandle":
    """The state actor called ``name``, created on first use (detached: it outlives any replica)
    with ``selection`` (role -> model id, see :func:`microforge.serve.tasks.initial_selection`)."""
    return ServeState.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                              max_concurrency=1000).remote(selection)


def kill_state(name: str) -> bool:
    """Kill the state actor (and with it the jobs it owns); False if there was none."""
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor, no_restart=True)
    return True
