"""Request guards of the ingress against other web pages: the ``Host`` check (DNS rebinding),
the same-origin check on mutating requests and WebSockets, and ``X-Content-Type-Options``.

A web page the user visits may send requests to the local server: a DNS-rebinding page names
its own host in ``Host``, and a cross-site form or fetch names its page in ``Origin`` (browsers
always send ``Origin`` on cross-origin requests and WebSocket handshakes). Non-browser clients
(curl, scripts) send no ``Origin`` and are not affected.
"""

from __future__ import annotations

from typing import Any, Iterable

from starlette.datastructures import Headers

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def host_name(host: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host_names(bound: str, extra: Iterable[str]) -> set[str] | None:
    """The ``Host`` names the server answers to; None accepts any (a wildcard bind without
    configured names, or ``'*'`` among them)."""
    extra = [name.lower() for name in extra]
    if "*" in extra or (bound in WILDCARD_HOSTS and not extra):
        return None
    return {*LOCAL_NAMES, bound.lower(), *extra}


def _reject(status: int, detail: str):
    from .api import error

    return error(status, detail)


class RequestGuard:
    """ASGI middleware: 403 JSON for a ``Host`` the server does not answer to, and, on mutating
    requests without a token configured (and on every WebSocket handshake), for an ``Origin``
    other than the server's own or a configured CORS origin; adds ``nosniff`` to every response."""

    def __init__(self, app: Any, hosts: set[str] | None, cors_origins: list[str], token: bool) -> None:
        self.app, self.hosts, self.token = app, hosts, token
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    def origin_ok(self, headers: Headers, scheme: str) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        origin = origin.rstrip("/").lower()
        own = f"{scheme}://{headers.get('host', '').lower()}"
        return origin == own or "*" in self.origins or origin in self.origins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            return await self._deny(scope, receive, send, f"host '{headers.get('host', '')[:100]}' is not served "
                                                          "here (add it to allowed_hosts in the serve config)")
        websocket = scope["type"] == "websocket"
        if websocket or (scope["method"] in MUTATING_METHODS and not self.token):
            scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
            if not self.origin_ok(headers, scheme):
                return await self._deny(scope, receive, send, "cross-origin request refused: without an API token, "
                                                              "changes are accepted only from the server's own page")
        if websocket:
            return await self.app(scope, receive, send)

        async def send_nosniff(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_nosniff)

    async def _deny(self, scope: dict, receive: Any, send: Any, detail: str) -> None:
        if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
            await receive()
            return await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        response = _reject(403, detail)
        response.headers["X-Content-Type-Options"] = "nosniff"
        await response(scope, receive, send)
