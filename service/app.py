"""The API process: app factory. It never imports torch (a test holds it to that)."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import parse_api_keys
from service.broker import Broker
from service.errors import ApiError
from service.routes import datasets, health, jobs
from service.settings import Settings, get_settings
from service.store import open_store

log = logging.getLogger("regtrain.api")


def _version() -> str:
    try:
        return version("regtrain")
    except PackageNotFoundError:  # run from a source tree without installing
        return "0+unknown"


DESCRIPTION = """Train regularized PyTorch models over HTTP.

POST a JobSpec to `/v1/jobs`, poll `/v1/jobs/{id}`, read per-epoch `metrics`, and download
`checkpoints` as safetensors. `POST /v1/jobs:validate` checks a spec without queuing it.
Every default of the JobSpec is written in its schema below.
"""


class BodyLimit:
    """Refuse (413) a request whose declared size is over the upload limit before reading it;
    the upload route also counts what it reads, for bodies sent without a length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse(
                    {"detail": f"the request body exceeds {self.max_bytes} bytes"}, status_code=413
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="regtrain",
        version=_version(),
        description=DESCRIPTION,
        responses={404: {"description": "Unknown id (or another tenant's)"}},
    )
    app.state.settings = settings
    app.state.api_keys = parse_api_keys(settings.api_keys)
    # Migrations run here, at start: an upgraded install keeps every job.
    app.state.store = open_store(settings.store_url)
    app.state.broker = Broker(settings)
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    for module in (jobs, datasets, health):
        app.include_router(module.router)
    # Multipart overhead on top of the file itself.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + 1024 * 1024)
    return app
