"""Annotated dependencies, so routes read `store: StoreDep` and stay short.

Each is `async` because none blocks: FastAPI runs a sync dependency in its thread pool, a hop
that cost more than the whole GET /v1/jobs/{id} handler."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.api.auth import tenant_for
from service.queue.broker import Broker
from service.settings import Settings
from service.store import Repository
from service.store.artifacts import Artifacts
from service.store.event_loop_reads import JobReads
from service.submission.remote import RemoteSlots


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Repository:
    return request.app.state.store


async def _artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


async def _job_reads(request: Request) -> JobReads:
    return request.app.state.job_reads


async def _broker(request: Request) -> Broker:
    return request.app.state.broker


async def _remote(request: Request) -> RemoteSlots:
    return request.app.state.remote


async def _tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    return tenant_for(authorization, request.app.state.api_keys)


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Repository, Depends(_store)]
ArtifactsDep = Annotated[Artifacts, Depends(_artifacts)]
BrokerDep = Annotated[Broker, Depends(_broker)]
# GET /v1/jobs/{id} and GET /v1/jobs, awaited on the event loop (store/event_loop_reads.py)
JobReadsDep = Annotated[JobReads, Depends(_job_reads)]
TenantDep = Annotated[str, Depends(_tenant)]
# each tenant's share of the exchanges with datasets' origins (submission/remote.py)
RemoteDep = Annotated[RemoteSlots, Depends(_remote)]
