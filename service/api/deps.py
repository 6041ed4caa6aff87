"""Annotated dependencies, so routes read `store: StoreDep` and stay short.

Each is `async` because none blocks: FastAPI runs a sync dependency in its thread pool, a hop
that cost more than the whole GET /v1/jobs/{id} handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, Header, Request

from service.api.auth import tenant_for
from service.queue.broker import Broker
from service.settings import Settings
from service.store import Repository
from service.store.artifacts import Artifacts


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Repository:
    return request.app.state.store


async def _artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


async def _broker(request: Request) -> Broker:
    return request.app.state.broker


async def _tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    return tenant_for(authorization, request.app.state.api_keys)


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Repository, Depends(_store)]
ArtifactsDep = Annotated[Artifacts, Depends(_artifacts)]
BrokerDep = Annotated[Broker, Depends(_broker)]
TenantDep = Annotated[str, Depends(_tenant)]


T = TypeVar("T")


async def read(store: Repository, query: Callable[..., T], *args: object) -> T:
    """Run the store's read `query(*args)` for an async route: on the event loop where the
    store's reads never wait (SQLite, see Repository.reads_inline), else in the thread pool.
    The hottest reads (GET /v1/jobs/{id}) skip the thread hop that way, which cost more than
    the read itself."""
    if store.reads_inline:
        return query(*args)
    return await anyio.to_thread.run_sync(query, *args)
