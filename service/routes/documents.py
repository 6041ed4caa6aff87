"""Documents the API builds itself, sent as JSON without a second pass through the route's
response model: they are the model's shape by construction (a test holds them to it), and
validating them again cost more than the rest of GET /v1/jobs/{id}. The decorator's
response_model still writes the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Response
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from service.store import Repository

T = TypeVar("T")


def json_document(doc: Any) -> Response:
    """`doc` as JSON (datetimes in ISO 8601, non-finite numbers as null), in one Rust pass."""
    return Response(content=to_json(doc), media_type="application/json")


async def read(store: Repository, fn: Callable[..., T], *args: Any) -> T:
    """A store read from an async route: inline on SQLite, where a local read takes microseconds
    and the thread pool's hop cost more than the read; in the thread pool on PostgreSQL, whose
    round trip must not hold up the event loop's other requests."""
    if store.local:
        return fn(*args)
    return await run_in_threadpool(fn, *args)
