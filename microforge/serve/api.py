"""The FastAPI application of the ingress: middleware, error format and the route modules.

Every response is JSON ``{"ok": true, ...}`` on success and ``{"ok": false, "detail": "..."}``
with a 4xx/5xx status on failure (images and files excepted).
"""

from __future__ import annotations

import errno
import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from microforge import __version__
from microforge.platform.errors import ConfigError, MicroforgeError

from .backend import Backend, unwrap
from .guards import RequestGuard, allowed_host_names

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SHARED_ROUTES = ("system", "analysis")  # modules under routes/ that belong to no Serve task


def error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"ok": False, "detail": detail, **extra}, status_code=status)


class ErrorLocation(BaseModel):
    loc: list[str]
    msg: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API (images and files excepted)."""

    model_config = ConfigDict(extra="allow")

    ok: bool = Field(False, description="Always false.")
    detail: str = Field(..., description="What went wrong, in words a user can act on.")
    errors: list[ErrorLocation] | None = Field(None, description="422 on a malformed request: each invalid field.")


_ERROR_MEANINGS = {
    400: "Bad request: a malformed name or path.",
    401: "Missing or wrong bearer token.",
    403: "Refused: a path outside the data root, a foreign Host or a cross-origin change.",
    404: "Not found.",
    409: "Conflict with a running or unfinished job.",
    413: "Too large: body, upload, image pixels or count past a configured limit.",
    415: "Not an accepted image format.",
    422: "Invalid request or configuration value.",
    500: "Internal error (see the server log).",
    503: "A backend replica or model is unavailable; retry shortly.",
    504: "The server-side deadline passed (limits.request_timeout_s).",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERROR_MEANINGS.items()}


def status_of(exc: BaseException) -> int:
    """The HTTP status of a microforge error: its own ``status``, 422 for config errors, else 400."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    return 422 if isinstance(exc, ConfigError) else 400


def cors_options(origins: list[str]) -> dict[str, Any] | None:
    """CORSMiddleware arguments, or None (CORS off) without origins. Credentials never go with '*'."""
    if not origins:
        return None
    wildcard = "*" in origins
    return {"allow_origins": ["*"] if wildcard else list(origins), "allow_credentials": not wildcard,
            "allow_methods": ["GET", "POST", "OPTIONS"], "allow_headers": ["Authorization", "Content-Type"]}


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    return detail, errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        return error(422, detail, errors=errors)

    @app.exception_handler(MicroforgeError)
    async def microforge_error(_: Request, exc: MicroforgeError) -> JSONResponse:
        # An error an actor raised arrives as Ray's task error, which subclasses the original
        # class: answer with the original, never with Ray's text (worker pid, IP, traceback).
        cause = unwrap(exc)
        return error(status_of(cause), str(cause))

    # Starlette answers with this handler, then re-raises so the server logs the traceback.
    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> JSONResponse:
        cause = unwrap(exc)
        if isinstance(cause, MicroforgeError):
            return error(status_of(cause), str(cause))
        known = known_error(cause)
        if known is not None:
            return error(*known)
        return error(500, f"internal error ({type(cause).__name__}); see the server log")


def known_error(exc: BaseException) -> tuple[int, str] | None:
    """The 4xx answer of an error a request's input caused deep in a library, or None."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return 413, "the requested image would be too large to draw (a size past Pillow's pixel limit)"
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return 400, "a file or folder name is too long"
    if isinstance(exc, MemoryError):
        return 413, "the request needs more memory than the server has; ask for less"
    return None


class BodyLimit:
    """ASGI middleware capping request bodies: refused from ``Content-Length`` when it is declared,
    and counted while streaming otherwise (chunked bodies), so no body past the cap is buffered."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> HTTPException:
        return HTTPException(413, f"request body larger than the {self.max_bytes}-byte limit")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await error(413, self.too_large().detail)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self.too_large()  # surfaces through the HTTPException handler as a 413
            return message

        await self.app(scope, counted, send)


class BearerToken:
    """ASGI middleware: mutating requests need ``Authorization: Bearer <token>`` (plain ASGI rather
    than ``@app.middleware``, whose per-request task and stream cost showed in the ingress' profile)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in MUTATING_METHODS:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode("latin-1"), self.token):
                response = error(401, "missing or wrong bearer token (Authorization: Bearer <MICROFORGE_API_TOKEN>)")
                response.headers["WWW-Authenticate"] = "Bearer"
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def install_guards(app: FastAPI, backend: Backend) -> None:
    """Body-size cap, the optional bearer token on mutating endpoints, and (outermost) the
    Host / Origin guard that also adds ``X-Content-Type-Options: nosniff``."""
    config = backend.config
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_request_bytes)
    if config.api_token:
        app.add_middleware(BearerToken, token=config.api_token)
    app.add_middleware(RequestGuard, hosts=allowed_host_names(config.host, config.allowed_hosts),
                       cors_origins=config.cors_origins, token=bool(config.api_token))


def create_api(backend: Backend) -> FastAPI:
    """The ingress application for ``backend`` (built in each ingress replica): the shared
    routes, then each Serve task's routes (see :mod:`microforge.serve.tasks`)."""
    import importlib

    from .tasks import TASKS

    app = FastAPI(title="microforge", version=__version__,
                  description="Synthetic microscopy data and models on Ray Serve.")
    app.state.backend = backend
    install_error_handlers(app)
    install_guards(app, backend)
    cors = cors_options(backend.config.cors_origins)
    if cors is not None:  # added last, so it wraps the guards and 401s still carry CORS headers
        app.add_middleware(CORSMiddleware, **cors)
    modules = [*SHARED_ROUTES, *(name for task in TASKS for name in task.routers)]
    for name in dict.fromkeys(modules):
        app.include_router(importlib.import_module(f"{__package__}.routes.{name}").router, responses=ERROR_RESPONSES)

    @app.get("/", include_in_schema=False)
    async def index():
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return {"ok": True, "service": "microforge", "version": __version__, "docs": "/docs"}

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
