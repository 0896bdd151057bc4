"""Live frames: ``POST /stream_frame`` analyses a frame and ``WS /ws/live`` pushes it to every client.

The frame goes to the state actor, which bumps a version counter; every ingress replica runs a
:class:`LiveBroadcaster` that long-polls the actor and forwards each new version to the
WebSocket clients connected to that replica (see :mod:`microforge.serve.state`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, WebSocket, WebSocketDisconnect

from ..backend import Backend, get_backend, image_url, offload

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

LIVE_DIR = "live"
_POLL_S = 10.0


class LiveBroadcaster:
    """Per-replica fan-out of live frames to this replica's WebSocket clients."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.clients: set[WebSocket] = set()
        self.version = 0
        self.task: Optional[asyncio.Task] = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        self.version = (await self.state.live_snapshot.remote(0))["version"]
        while True:
            try:
                version, last = await self.state.wait_live.remote(self.version, _POLL_S)
            except Exception as exc:  # the actor restarting must not end the loop
                log.warning("live: polling the state actor failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if version > self.version and last is not None:
                self.version = version
                await asyncio.gather(*(self._send(ws, {"ok": True, "last": last, "version": version})
                                       for ws in list(self.clients)))

    async def _send(self, ws: WebSocket, message: dict[str, Any]) -> None:
        try:
            await ws.send_json(message)
        except Exception:  # a client that went away is dropped
            self.clients.discard(ws)


def broadcaster(app: Any, backend: Backend) -> LiveBroadcaster:
    if not hasattr(app.state, "live"):
        app.state.live = LiveBroadcaster(backend.state)
    return app.state.live


@router.post("/stream_frame")
async def stream_frame(file: UploadFile = File(...),
                       timestamp: Optional[float] = Form(None, description="Frame time; default: now (s)."),
                       backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """Analyse a frame with the selected detector and push it to every live client."""
    image = await backend.decode_upload(file)
    result = await backend.call(backend.handle("detect").detect, await backend.model_id("detect"), image)
    overlay, stats = await offload(backend.save_overlay, LIVE_DIR, image, result["detections"])
    last = {"time": time.time() if timestamp is None else timestamp, "stats": stats,
            "overlay_url": image_url(overlay)}
    version = await backend.state.push_live.remote(last)
    return {"ok": True, "last": last, "version": version}


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    stats = item["stats"]
    return {"time": item["time"], **{k: stats[k] for k in ("count", "mean_length", "mean_width",
                                                           "mean_aspect_ratio", "mean_area")}}


@router.get("/live_stats")
async def live_stats(history: int = Query(100, ge=0, le=500),
                     backend: Backend = Depends(get_backend)) -> dict[str, Any]:
    """The last frame and a summary of the recent ones."""
    snapshot = await backend.state.live_snapshot.remote(history)
    return {"ok": True, "last": snapshot["last"], "version": snapshot["version"],
            "history": [_summary(item) for item in snapshot["history"]]}


@router.websocket("/ws/live")
async def ws_live(websocket: WebSocket) -> None:
    """Sends ``{"ok": true, "last": {time, stats, overlay_url}}`` now (if any) and on every new frame."""
    backend: Backend = websocket.app.state.backend
    live = broadcaster(websocket.app, backend)
    await websocket.accept()
    live.ensure_running()
    live.clients.add(websocket)
    try:
        snapshot = await backend.state.live_snapshot.remote(0)
        if snapshot["last"] is not None:
            await websocket.send_json({"ok": True, "last": snapshot["last"], "version": snapshot["version"]})
        while True:  # clients need not send anything; this notices when they leave
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        live.clients.discard(websocket)
