"""Sweeps as the API sees them: check a SweepSpec against its data, submit it, render the
document. The worker (worker/sweep_task.py) runs it and retrains the best trial as a job."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

from service.contract.architecture import (
    DataShape,
    check_caps,
    check_feasible,
    estimate_worker_bytes,
    parameter_count,
    plan_model,
)
from service.contract.errors import ErrorType, SpecError
from service.contract.stacking import vectorize_refusal
from service.contract.sweep_spec import SweepSpec, Trial, clamped, expand, planned_trials, trainings
from service.data.columns import TextBounds
from service.queue.broker import Broker, queue_for_device
from service.settings import Settings
from service.store import Repository
from service.store.repository import Row
from service.submission import idempotency, jobs


@dataclass(frozen=True)
class CheckedSweep:
    sweep: SweepSpec  # as it runs (sweep_spec.clamped: a grid sampler's trials at most its combinations)
    # every trial's spec; for a space, the specs checked: each field's corners and the worst case
    trials: list[Trial]
    shape: DataShape
    warnings: list[str] = field(default_factory=list)  # how it runs unlike what was asked

    def worst_case(self) -> tuple[int, int]:
        """(parameters, worker memory in bytes) of the largest trial checked: a space's joint
        worst case among them."""
        parameters, memory = 0, 0
        for t in self.trials:
            layers = plan_model(t.spec, self.shape)
            parameters = max(parameters, parameter_count(layers))
            worker = estimate_worker_bytes(self.shape, layers, t.spec.training.batch_size)
            memory = max(memory, sum(worker.values()))
        return parameters, memory


def check_sweep(sweep: SweepSpec, store: Repository, tenant: str, settings: Settings) -> CheckedSweep:
    """Every trial's validated JobSpec, each within the caps (a space's worst case too); 422
    naming the field of a sweep that cannot run."""
    sweep, warnings = clamped(sweep)
    n = trainings(sweep)
    if n > settings.max_sweep_trainings:
        search = next(k for k in ("space", "grid", "random", "path") if getattr(sweep, k) is not None)
        raise SpecError(
            ("body", search),
            f"{planned_trials(sweep):,} trials × {max(sweep.cv_folds, 1)} folds × {sweep.seeds} seeds = "
            f"{n:,} trainings exceed "
            f"the limit of {settings.max_sweep_trainings:,} (REGTRAIN_MAX_SWEEP_TRAININGS)",
        )
    jobs.check_notify(sweep.base, settings.admits_private_targets, ("body", "base"))
    jobs.check_tracking(sweep.base, settings, ("body", "base"))
    shape = jobs.data_shape(sweep.base, store, tenant, ("body", "base"), text=TextBounds.of(settings))
    try:
        trials = expand(
            sweep,
            shape,
            settings.max_parameters,
            max_memory_bytes=settings.max_worker_memory_bytes,
            max_epoch_samples=settings.max_epoch_samples,
        )
    except SpecError as e:
        raise SpecError(("body", *e.loc), e.message) from None
    if sweep.vectorize is True:
        reason = vectorize_refusal([t.spec for t in trials])
        if reason is not None:
            raise SpecError(("body", "vectorize"), f"vectorize is true but {reason}")
    return CheckedSweep(sweep, trials, shape, warnings)


def sweep_shape(sweep: SweepSpec, store: Repository, tenant: str) -> DataShape | None:
    """The shape of the data a sweep's trials train on, as the API read it when it admitted the
    sweep (None: its upload is gone, and the trials fail bad_data when they load it)."""
    try:
        return jobs.data_shape(sweep.base, store, tenant)
    except SpecError:
        return None


def trials_over_caps(trials: list[Trial], shape: DataShape, settings: Settings) -> dict[int, dict[str, Any]]:
    """Trial index → its error, for each trial this process's caps refuse on data of `shape`
    (over_limit: its model, memory or work; bad_params: it cannot be built there). A worker asks
    before it trains a trial: the API admitted the sweep under its own caps, which may be
    looser than this worker's or may have been lowered since."""
    caps = jobs.caps(settings)
    out: dict[int, dict[str, Any]] = {}
    for t in trials:
        try:
            check_feasible(t.spec, shape, sys.maxsize)
        except SpecError as e:
            out[t.index] = {"type": ErrorType.BAD_PARAMS, "message": str(e)[:2000]}
            continue
        try:
            check_caps(t.spec, shape, caps)
        except SpecError as e:
            out[t.index] = {
                "type": ErrorType.OVER_LIMIT,
                "message": f"not trained: {e} (this worker's limits)"[:2000],
            }
    return out


def submit(
    checked: CheckedSweep,
    store: Repository,
    broker: Broker,
    tenant: str,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Row:
    """Store the sweep and its trials, then ring the broker (on the base spec's device queue).
    A retried POST with the same Idempotency-Key and the same sweep returns the first sweep,
    with another sweep a 409 (as jobs.submit)."""
    sweep, trials = checked.sweep, checked.trials
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
    dataset_id = jobs.uploaded_id(sweep.base)
    with jobs.dataset_held(("body", "base"), dataset_id):
        row, created = once.create(
            lambda: store.create_sweep(
                tenant=tenant,
                spec=spec,
                queue=queue,
                # a search's trials are asked as it runs; `trials` here only checked its corners
                trials=[] if sweep.space is not None else [t.params for t in trials],
                idempotency_key=idempotency_key,
                request_sha256=once.request_sha256,
                notify_secret=sweep.base.notify.secret if sweep.base.notify else None,
                dataset_id=dataset_id,
                warnings=checked.warnings,
                # the rule its retrain job is admitted under (the API's, as a job's)
                egress_private=settings.admits_private_targets,
            )
        )
    if not created:
        return row
    jobs.send(broker.enqueue_sweep, store.fail_queued_sweep, row["id"], queue)
    return row
