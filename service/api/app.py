"""The API process: app factory. It never imports torch (a test holds it to that)."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, get_args

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import validation_errors
from service.api.auth import parse_api_keys
from service.api.errors import ApiError, status_of
from service.api.predict import Predictors
from service.api.routes import (
    batch_predictions,
    dashboard,
    datasets,
    docs,
    events,
    health,
    job_logs,
    jobs,
    metrics,
    predict,
    sweeps,
    workers,
)
from service.api.telemetry import RequestTimer, make_registry
from service.api.text_guard import TextGuard
from service.contract.errors import DomainError
from service.notify.listeners import tell_on_change
from service.queue.broker import Broker, QueueKind, queue_name
from service.queue.doorbell import Listener
from service.settings import Settings, get_settings
from service.store import open_store
from service.store.artifacts import Artifacts
from service.store.event_loop_reads import event_loop_reads
from service.submission.remote import RemoteSlots
from service.version import regtrain_version

log = logging.getLogger("regtrain.api")


DESCRIPTION = """Train regularized PyTorch models over HTTP.

POST a JobSpec to `/v1/jobs`, poll `/v1/jobs/{id}`, read per-epoch `metrics`, and download
`checkpoints` as safetensors. `POST /v1/jobs:validate` checks a spec without queuing it.
`POST /v1/sweeps` searches for the best λ (grid, random or path, with k-fold cross validation)
and retrains the winner as a job. Every default of the JobSpec is written in its schema below.
"""


# The routes that take a file; every other body is a small JSON document.
UPLOAD_PATHS = frozenset({"/v1/datasets"})


# A route whose JSON body may be larger than max_request_bytes: (its path, its limit, what the
# 413 adds to say how to send less).
RouteLimit = tuple[re.Pattern[str], int, str]
ROUTE_LIMITS: tuple[RouteLimit, ...] = ((predict.PREDICT_PATH, predict.MAX_BODY_BYTES, predict.TOO_LARGE),)


class BodyLimit:
    """Refuse (413) a request body over its limit: a multipart upload to an upload route may be
    as large as the upload limit, a route of `route_limits` as large as its own (POST /predict:
    its rows), any other body (JSON) as large as max_request_bytes. A declared Content-Length
    over the limit is refused before reading; a body sent without one (chunked) is counted as
    it arrives and refused once it passes the limit, so memory stays bounded."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_upload_bytes: int | None = None,
        route_limits: tuple[RouteLimit, ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes if max_upload_bytes is not None else max_bytes
        self.route_limits = route_limits

    def _limit(self, path: str, upload: bool) -> tuple[int, str]:
        if upload:
            return self.max_upload_bytes, ""
        for pattern, limit, hint in self.route_limits:
            if pattern.match(path):
                return limit, f": {hint}"
        return self.max_bytes, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        upload = multipart and scope["path"] in UPLOAD_PATHS
        limit, hint = self._limit(scope["path"], upload)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = JSONResponse(
                {"detail": f"the request body exceeds {limit} bytes{hint}"}, status_code=413
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI passes an HTTPException raised while reading the body through.
                    raise HTTPException(413, f"the request body exceeds {limit} bytes{hint}")
            return message

        await self.app(scope, counted, send)


ERRORS = {
    400: "Malformed request, e.g. an upload that is not CSV or NPZ data",
    401: "No or bad API key (only where REGTRAIN_API_KEYS is set)",
    409: "Wrong state (e.g. cancelling a finished job), or an Idempotency-Key reused with another body",
    413: "Request body or upload too large",
    429: "The tenant has REGTRAIN_MAX_ACTIVE_JOBS jobs queued or running; retry after Retry-After seconds",
    503: "The broker or the store is unreachable",
}


ERROR_BODY = {
    "application/json": {"schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}}
}


def _document_errors(router: APIRouter) -> None:
    """Write the error statuses each /v1 route can answer into the OpenAPI schema (a
    schemathesis run holds every response to it)."""
    for route in router.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/v1"):
            continue
        codes = [401]
        if (route.methods or set()) & {"POST", "PUT", "PATCH"}:
            codes += [400, 409, 413, 503]
            if route.path in ("/v1/jobs", "/v1/jobs/{job_id}/predictions"):
                codes.append(429)
        for code in codes:
            entry: dict[str, Any] = {"description": ERRORS[code], "content": ERROR_BODY}
            if code == 429:
                entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
            route.responses.setdefault(code, entry)


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in anyio's thread pool (40 threads by default). No more of them at once
        # than the store's pool holds: a request past it would open a connection and close it
        # again (SQLAlchemy's overflow), per request, just when the process is busiest.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        # The hot reads' async pool (PostgreSQL) belongs to this event loop.
        await app.state.job_reads.open()
        # Everything made so far (modules, the app and its schemas, the store's tables) lives as
        # long as the process: frozen out of the collector's sight, a full collection walks only
        # what requests leave behind. Before this, one took 150-280 ms with the event loop
        # stopped, and under load those pauses were the p99 of every request (docs/CAPACITY.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.job_reads.close()

    app = FastAPI(
        lifespan=lifespan,
        title="regtrain",
        version=regtrain_version(),
        description=DESCRIPTION,
        responses={404: {"description": "Unknown id (or another tenant's)"}},
        # /docs and /redoc come from service.api.routes.docs, with files that ship in service/api/static
        docs_url=None,
        redoc_url=None,
        # Each operation's id is its route's name (create_job, get_job), which a client generator
        # makes its functions of; FastAPI's default glues on the path and method
        # (create_job_v1_jobs_post). FastAPI warns of a duplicate, and the generated client's
        # test fails on any warning.
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.api_keys = parse_api_keys(settings.api_keys)
    # Migrations run here, at start: an upgraded install keeps every job.
    app.state.store = open_store(settings.store_url, pool_size=settings.db_pool_size)
    app.state.job_reads = event_loop_reads(app.state.store, settings.db_pool_size)
    app.state.broker = Broker(settings)
    queues = [queue_name(settings, kind) for kind in get_args(QueueKind)]
    app.state.registry, latency = make_registry(app.state.store, settings.lease_seconds, queues)
    app.state.artifacts = Artifacts(settings)
    app.state.predictors = Predictors()
    tell_on_change(app.state.store, settings)
    app.state.remote = RemoteSlots(settings.remote_requests_per_tenant)
    app.state.listener = Listener(settings)
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        status, headers = status_of(exc)
        return JSONResponse({"detail": exc.detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each bad input back, and a NaN or infinity (which
        # Python's JSON parser accepts) then fails to render: a 500 instead of the 422.
        return JSONResponse({"detail": validation_errors.render(exc.errors(), exc.body)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    for module in (
        jobs,
        job_logs,
        events,
        predict,
        batch_predictions,
        sweeps,
        datasets,
        health,
        metrics,
        workers,
    ):
        _document_errors(module.router)
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.include_router(docs.router)
    app.mount("/static", dashboard.static, name="static")
    # Inside BodyLimit, which bounds the JSON bodies it reads whole.
    app.add_middleware(TextGuard)
    # Multipart overhead on top of the file itself.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes + 1024 * 1024,
        route_limits=ROUTE_LIMITS,
    )
    app.add_middleware(RequestTimer, latency=latency)
    return app
