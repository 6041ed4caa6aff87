"""Sweeps as the API sees them: check a SweepSpec against its data, submit it, render the
document. The worker (worker/sweep_task.py) runs it and retrains the best trial as a job."""

from __future__ import annotations

import functools
from typing import Any

from service import idempotency, jobs, selection
from service.broker import Broker, queue_for_device
from service.errors import Invalid
from service.search_space import study_name, study_storage
from service.settings import Settings
from service.stacking import vectorize_refusal
from service.store import Repository
from service.store.repository import Row
from service.store.sweep_units import SweepUnits
from service.sweep_spec import SweepError, SweepSpec, Trial, expand, trainings, trial_count


def check_sweep(sweep: SweepSpec, store: Repository, tenant: str, settings: Settings) -> list[Trial]:
    """Every trial's validated JobSpec; 422 naming the field of a sweep that cannot run."""
    n = trainings(sweep)
    if n > settings.max_sweep_trainings:
        search = next(k for k in ("space", "grid", "random", "path") if getattr(sweep, k) is not None)
        raise Invalid(
            ("body", search),
            f"{trial_count(sweep):,} trials × {max(sweep.cv_folds, 1)} folds × {sweep.seeds} seeds = "
            f"{n:,} trainings exceed "
            f"the limit of {settings.max_sweep_trainings:,} (REGTRAIN_MAX_SWEEP_TRAININGS)",
        )
    shape = jobs.data_shape(sweep.base, store, tenant, ("body", "base"))
    try:
        trials = expand(
            sweep, shape, settings.max_parameters, max_memory_bytes=settings.max_worker_memory_bytes
        )
    except SweepError as e:
        raise Invalid(("body", *e.loc), e.message) from None
    if sweep.vectorize is True:
        reason = vectorize_refusal([t.spec for t in trials])
        if reason is not None:
            raise Invalid(("body", "vectorize"), f"vectorize is true but {reason}")
    return trials


def submit(
    sweep: SweepSpec,
    trials: list[Trial],
    store: Repository,
    broker: Broker,
    tenant: str,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Row:
    """Store the sweep and its trials, then ring the broker (on the base spec's device queue).
    A retried POST with the same Idempotency-Key and the same sweep returns the first sweep,
    with another sweep a 409 (as jobs.submit)."""
    spec = sweep.model_dump(mode="json")
    find = functools.partial(store.sweep_by_idempotency_key, tenant)
    once = idempotency.Once(find, idempotency_key, spec, "sweep")
    queue = queue_for_device(settings, sweep.base.training.device)
    existing = once.previous()
    if existing is not None:
        if store.requeue_unsent_sweep(existing["id"]):  # a retry after a 503
            jobs.send(broker.enqueue_sweep, store.fail_queued_sweep, existing["id"], queue)
            return store.get_sweep(existing["id"]) or existing
        return existing
    jobs.check_capacity(store, tenant, settings.max_active_jobs)
    row, created = once.create(
        lambda: store.create_sweep(
            tenant=tenant,
            spec=spec,
            queue=queue,
            # a search's trials are asked as it runs; `trials` here only checked its corners
            trials=[] if sweep.space is not None else [t.params for t in trials],
            idempotency_key=idempotency_key,
            request_sha256=once.request_sha256,
        )
    )
    if not created:
        return row
    jobs.send(broker.enqueue_sweep, store.fail_queued_sweep, row["id"], queue)
    return row


def leaderboard(spec: dict[str, Any], trials: list[Row]) -> list[int]:
    """Indices of the scored trials, best first (ties: the lower index, as the engine breaks them)."""
    sign = -1.0 if selection.primary(spec).get("mode") == "max" else 1.0
    scored = [t for t in trials if t["status"] == "succeeded" and t["score"] is not None]
    return [t["trial_index"] for t in sorted(scored, key=lambda t: (sign * t["score"], t["trial_index"]))]


def trial_document(t: Row) -> dict[str, Any]:
    return {
        "index": t["trial_index"],
        "params": t["params"],
        "status": t["status"],
        "metrics": t["metrics"],
        "score": t["score"],
        "fold_scores": t["fold_scores"],
        "vectorized": bool(t["vectorized"]),
        "error": t["error"],
        "epochs_trained": t["epochs_trained"],
        "pruned_at_epoch": t["pruned_at_epoch"],
        "reason": t["reason"],
        "progress": t["progress"],
        "curve": t["curve"] or [],
        "unit": t["unit"],
        "worker": t["worker"],
        "started_at": t["started_at"],
        "finished_at": t["finished_at"],
    }


def _units(sweep: Row, trials: list[Row], units: list[Row]) -> list[dict[str, Any]]:
    """The units of work, each with the worker that ran it (or runs it) and its attempts: the
    leased batches of a grid, random or search sweep, or a path's one chain on the sweep's
    worker."""
    if units:
        return [
            {
                "index": u["unit_index"],
                "status": u["status"],
                "worker": u["worker"],
                "attempts": u["attempts"],
                "trials": u["trials"],
            }
            for u in units
        ]
    if not trials:
        return []
    statuses = {t["status"] for t in trials}
    status = "running" if statuses & {"running", "queued"} else "succeeded"
    worker = next((t["worker"] for t in trials if t["worker"]), None) or sweep["lease_owner"]
    return [
        {
            "index": 0,
            "status": "queued" if statuses == {"queued"} else status,
            "worker": worker,
            "attempts": sweep["attempts"],
            "trials": [t["trial_index"] for t in trials],
        }
    ]


def document(
    sweep: Row,
    trials: list[Row],
    best_job: Row | None = None,
    storage_url: str | None = None,
    units: list[Row] | None = None,
) -> dict[str, Any]:
    """The sweep as docs/API.md spells it."""
    by_index = {t["trial_index"]: t for t in trials}
    best_row = by_index.get(sweep["best_index"]) if sweep["best_index"] is not None else None
    best = None
    if best_row is not None:
        result = (best_job or {}).get("result") or {}
        best = {
            "index": best_row["trial_index"],
            "params": best_row["params"],
            "metrics": best_row["metrics"],
            "score": best_row["score"],
            "score_std": (best_row["metrics"] or {}).get(
                f"{selection.primary(sweep['spec']).get('metric')}_std"
            ),
            "job_id": sweep["best_job_id"],
            "job_status": (best_job or {}).get("status"),
            "test_metrics": result.get("metrics"),
        }
    spec = sweep["spec"]
    doc = {
        "id": sweep["id"],
        "name": sweep["name"],
        "status": sweep["status"],
        "created_at": sweep["created_at"],
        "started_at": sweep["started_at"],
        "finished_at": sweep["finished_at"],
        "attempts": sweep["attempts"],
        "cancel_requested": bool(sweep["cancel_requested"]),
        "trials": [trial_document(t) for t in trials],
        "leaderboard": leaderboard(spec, trials),
        "best": best,
        "objective": selection.primary(spec),
        "objectives": selection.objectives(spec),
        "pareto": selection.pareto(spec, trials) if len(selection.objectives(spec)) > 1 else None,
        "units": _units(sweep, trials, units or []),
        "warnings": sweep["warnings"] or [],
        "study": None,
        "spec": spec,
        "error": sweep["error"],
    }
    if spec.get("space") is not None and storage_url is not None:
        doc["study"] = {"name": study_name(sweep["id"]), "storage": study_storage(storage_url)}
    return doc


def documents(store: Repository, rows: list[Row], storage_url: str | None = None) -> list[dict[str, Any]]:
    """The sweeps' documents; a sweep waiting for its retrain job is settled first (the job may
    have ended where no one told the sweep: failed by the reaper, cancelled)."""
    rows = [_settled(store, r) for r in rows]
    trials = store.trials([r["id"] for r in rows])
    units = SweepUnits(store.engine).of([r["id"] for r in rows])
    jobs = {r["id"]: store.get_job(r["best_job_id"]) if r["best_job_id"] else None for r in rows}
    return [document(r, trials[r["id"]], jobs[r["id"]], storage_url, units[r["id"]]) for r in rows]


def _settled(store: Repository, row: Row) -> Row:
    waiting = row["status"] == "running" and row["lease_owner"] is None and row["best_job_id"]
    if waiting and store.settle_sweep(row["id"]) is not None:
        return store.get_sweep(row["id"]) or row
    return row
