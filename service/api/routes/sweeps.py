"""/v1/sweeps: submit, read, list and cancel searches for the best λ (or dropout, or lr)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Body, Header, Response
from fastapi.responses import StreamingResponse

from service.api import render
from service.api.deps import BrokerDep, SettingsDep, StoreDep, TenantDep
from service.api.routes import lookup, pages
from service.api.schemas import Sweep, SweepList, SweepValidation
from service.api.sweep_events import parse_position
from service.api.sweep_events import stream as sweep_events_stream
from service.contract.sweep_spec import SweepSpec, planned_trials, trainings
from service.queue.broker import queue_for_device
from service.submission import sweeps

router = APIRouter(prefix="/v1", tags=["sweeps"])

SweepBody = Annotated[
    SweepSpec,
    Body(
        openapi_examples={
            "l2-grid-cv": {
                "summary": "A grid over L2 with 5-fold cross validation",
                "value": {
                    "name": "digits-l2",
                    "base": {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [64]}},
                    "grid": {"regularization.l2": [0, 0.0001, 0.001, 0.01]},
                    "objective": {"metric": "val_accuracy", "mode": "max"},
                    "cv_folds": 5,
                },
            },
            "random": {
                "summary": "A random search over L2 and dropout",
                "value": {
                    "base": {"dataset": {"name": "iris"}, "model": {"type": "mlp"}},
                    "random": {
                        "regularization.l2": {"log_uniform": [1e-6, 0.1]},
                        "model.dropout": {"uniform": [0, 0.5]},
                    },
                    "trials": 32,
                },
            },
            "search": {
                "summary": "TPE over L2, dropout and the optimizer (momentum only for sgd), pruned by ASHA",
                "value": {
                    "base": {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [64]}},
                    "sampler": "tpe",
                    "space": {
                        "regularization.l2": {"log_uniform": [1e-6, 0.1]},
                        "model.dropout": {"uniform": [0.0, 0.6]},
                        "optimizer.name": {"choice": ["adam", "sgd"]},
                        "optimizer.momentum": {"uniform": [0.0, 0.99], "when": {"optimizer.name": "sgd"}},
                    },
                    "trials": 32,
                    "pruner": {"type": "asha", "grace_epochs": 3, "reduction_factor": 3, "min_trials": 4},
                    "objective": {"metric": "val_accuracy", "mode": "max"},
                    "cv_folds": 5,
                },
            },
        }
    ),
]


@router.post("/sweeps", status_code=202, response_model=Sweep)
def create_sweep(
    sweep: SweepBody,
    response: Response,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Queue a sweep: give exactly one of `grid`, `random` (with `trials`), `path`, or a `space`
    that a `sampler` (Optuna's TPE by default) searches, with a `pruner`. Every
    trial's spec is validated first; the best trial is retrained on train + validation data and
    tested, as a job of its own (`best.job_id`). An `Idempotency-Key` header makes a retried
    POST return the same sweep."""
    checked = sweeps.check_sweep(sweep, store, tenant, settings)
    row = sweeps.submit(checked, store, broker, tenant, settings, idempotency_key)
    response.headers["Location"] = f"/v1/sweeps/{row['id']}"
    return render.sweep_documents(store, [row], settings.store_url)[0]


@router.post("/sweeps:validate", response_model=SweepValidation)
def validate_sweep(
    sweep: SweepBody, store: StoreDep, settings: SettingsDep, tenant: TenantDep
) -> dict[str, Any]:
    """Dry run, as for jobs: the sweep as it would run, its trials, the parameters and worker
    memory of its largest trial (a space's worst case), and its queue; nothing is queued. A
    sweep POST /v1/sweeps would refuse answers the same 422."""
    checked = sweeps.check_sweep(sweep, store, tenant, settings)
    parameters, memory = checked.worst_case()
    return {
        "spec": checked.sweep.model_dump(mode="json"),
        "trials": planned_trials(checked.sweep),  # budget.max_trials lowers it
        "trainings": trainings(checked.sweep),
        "parameters": parameters,
        "memory_bytes": memory,
        "task": checked.shape.task,
        "n_features": checked.shape.n_features,
        "n_outputs": checked.shape.n_outputs,
        "queue": queue_for_device(settings, checked.sweep.base.training.device),
        "warnings": checked.warnings,
    }


@router.get("/sweeps", response_model=SweepList)
def list_sweeps(
    store: StoreDep, tenant: TenantDep, query: pages.PageDep, settings: SettingsDep
) -> dict[str, Any]:
    """Newest first; follow `next_cursor` for older sweeps."""
    page, next_cursor = query.fetch(functools.partial(store.list_sweeps, tenant))
    return {"sweeps": render.sweep_documents(store, page, settings.store_url), "next_cursor": next_cursor}


@router.get("/sweeps/{sweep_id}", response_model=Sweep)
def get_sweep(sweep_id: str, store: StoreDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """The sweep; it stays `running` until its best trial's retrain job has finished."""
    sweep = lookup.found("sweep", sweep_id, store.get_sweep(sweep_id, tenant))
    return render.sweep_documents(store, [sweep], settings.store_url)[0]


@router.post("/sweeps/{sweep_id}/cancel", status_code=202, response_model=Sweep)
def cancel_sweep(sweep_id: str, store: StoreDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """A queued sweep is cancelled at once; a running one stops within a heartbeat, keeping
    the trials it finished (every other trial ends cancelled). A finished sweep → 409."""
    outcome = store.cancel_sweep(sweep_id, tenant)
    sweep = lookup.cancelled("sweep", sweep_id, outcome, lambda: store.get_sweep(sweep_id, tenant))
    return render.sweep_documents(store, [sweep], settings.store_url)[0]


@router.get(
    "/sweeps/{sweep_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def sweep_events(
    sweep_id: str,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> StreamingResponse:
    """`trial` (the trial) as each trial starts, ends an epoch, is pruned or finishes; `status`
    at each change of the sweep's status; `done` (the sweep) once it has finished, then the
    stream ends. Send Last-Event-ID on reconnect to resume after the last trial event."""
    lookup.found("sweep", sweep_id, await to_thread.run_sync(store.get_sweep, sweep_id, tenant))
    return StreamingResponse(
        sweep_events_stream(store, sweep_id, parse_position(last_event_id), settings.store_url),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
