"""Live frames: ``POST /stream_frame`` analyses a frame and ``WS /ws/live`` pushes it to every client.

Each open WebSocket holds one of its ingress replica's request slots (Serve counts it against
``max_ongoing_requests`` until it closes), so idle sockets could starve HTTP: a replica keeps at
most ``limits.max_live_clients`` of them (more are closed at once with code 1013, "try again
later"), closes a client that sent nothing for ``limits.live_idle_timeout_s`` (code 1000; any text
keeps a client alive), and, with an API token configured, accepts only clients that give it as
``?token=<token>`` in the URL (browsers cannot set headers on a WebSocket) or an
``Authorization: Bearer`` header (code 1008 otherwise).

The frame goes to the state actor, which bumps a version counter; every ingress replica runs a
:class:`LiveBroadcaster` that long-polls the actor and forwards each new version to the
WebSocket clients connected to that replica (see :mod:`microforge.serve.state`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile, WebSocket, WebSocketDisconnect

from ..backend import Backend, check_infer_pixels, get_backend, image_url, offload

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

LIVE_DIR = "live"
_POLL_S = 10.0
CLOSE_TRY_AGAIN = 1013  # RFC 6455: try again later (the cap on live clients)
CLOSE_POLICY = 1008  # RFC 6455: policy violation (missing or wrong token)


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
    check_infer_pixels(backend, image)
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


def token_given(websocket: WebSocket, token: str) -> bool:
    """Whether the handshake carries ``token`` (``?token=`` or ``Authorization: Bearer``)."""
    scheme, _, header = websocket.headers.get("authorization", "").partition(" ")
    given = websocket.query_params.get("token") or (header if scheme.lower() == "bearer" else "")
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


@router.websocket("/ws/live")
async def ws_live(websocket: WebSocket) -> None:
    """Sends ``{"ok": true, "last": {time, stats, overlay_url}}`` now (if any) and on every new frame."""
    backend: Backend = websocket.app.state.backend
    limits = backend.limits
    token = backend.config.api_token
    if token and not token_given(websocket, token):
        return await websocket.close(CLOSE_POLICY, "missing or wrong token (?token=<MICROFORGE_API_TOKEN>)")
    live = broadcaster(websocket.app, backend)
    await websocket.accept()
    if len(live.clients) >= limits.max_live_clients:
        return await websocket.close(CLOSE_TRY_AGAIN, f"at most {limits.max_live_clients} live clients per replica")
    live.ensure_running()
    live.clients.add(websocket)
    try:
        snapshot = await backend.state.live_snapshot.remote(0)
        if snapshot["last"] is not None:
            await websocket.send_json({"ok": True, "last": snapshot["last"], "version": snapshot["version"]})
        while True:  # clients need not send anything but keep-alives; this notices when they leave
            message = await asyncio.wait_for(websocket.receive(), limits.live_idle_timeout_s)
            if message["type"] == "websocket.disconnect":
                break
    except asyncio.TimeoutError:
        live.clients.discard(websocket)
        try:
            await websocket.close(1000, f"idle for {limits.live_idle_timeout_s:g} s")
        except Exception:  # noqa: BLE001 - the client left meanwhile
            pass
    except WebSocketDisconnect:
        pass
    finally:
        live.clients.discard(websocket)
