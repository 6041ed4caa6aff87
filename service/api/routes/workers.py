"""/v1/workers: the fleet, from the workers' heartbeats in the store (never the broker's view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import SettingsDep, StoreDep, TenantDep
from service.api.schemas import WorkerList
from service.store.workers import WorkerRegistry, WorkerRow

router = APIRouter(prefix="/v1", tags=["workers"])


@router.get("/workers", response_model=WorkerList)
def list_workers(store: StoreDep, settings: SettingsDep, tenant: TenantDep) -> dict[str, Any]:
    """Every worker process heard from within REGTRAIN_LEASE_SECONDS, by name: its queues,
    device, version, what it trains and its recent epoch rate. A worker writes its row every
    REGTRAIN_HEARTBEAT_SECONDS and deletes it when it stops cleanly; one that was killed, or has
    been silent longer than a lease (the silence after which its job goes to another worker), is
    left out, and the next reaper pass deletes its row.

    Workers are fleet-wide, seen by every tenant; what they train is not: `busy_with` names the
    job, sweep or sweep unit (and `busy_kind` which) only when it is the caller's tenant's, and
    both are null (with `busy`: true) for another tenant's work."""
    rows = WorkerRegistry(store.engine).alive(settings.lease_seconds)
    return {"workers": [_document(r, tenant) for r in rows]}


def _document(row: WorkerRow, tenant: str) -> dict[str, Any]:
    own = row.busy_tenant == tenant
    return {
        "name": row.name,
        "celery_name": row.celery_name,
        "host": row.host,
        "queues": row.queues,
        "device": row.device,
        "busy": row.busy_with is not None,
        "busy_with": row.busy_with if own else None,
        "busy_kind": row.busy_kind if own else None,
        "epochs_per_second": row.epochs_per_second,
        "started_at": row.started_at,
        "last_heartbeat": row.last_heartbeat,
        "version": row.version,
    }
