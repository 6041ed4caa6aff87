"""The Celery task: a thin adapter between the store and the engine.

claim (conditional UPDATE) → train with callbacks that write each metrics row and checkpoint
record as they happen → write the final state once. The message is only a doorbell: a job that
is not claimable (another worker has it, it was cancelled, it is finished) is skipped.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from typing import Any, Literal

from pydantic import ValidationError

from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from service.data.datafile import DataError
from service.data.uri import Stopped
from service.queue.broker import RUN_JOB_TASK
from worker import artifact_sync, leased_task, retention
from worker.attempt_logs import AttemptLog
from worker.celery_app import app
from worker.job_data import TimeLimitReached, local_dataset
from worker.lease import Lease
from worker.leased_task import finite
from worker.runtime import Runtime, runtime

log = logging.getLogger("regtrain.worker")


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    execute(job_id, runtime())


def execute(job_id: str, rt: Runtime) -> None:
    try:
        # What this attempt logs is kept with the job (worker/attempt_logs.py), from its claim
        # to its final state; retention's lines below are the worker's own.
        with AttemptLog(rt.store, job_id, max_bytes=rt.settings.job_log_max_bytes) as job_log:
            _execute(job_id, rt, job_log)
    finally:
        # Whatever the outcome, a job that has now finished keeps only what retention allows
        # (a job left running, for the reaper or another worker, is left alone).
        retention.prune(rt.store, rt.artifacts, job_id, rt.settings.keep_epoch_checkpoints)
        artifact_sync.drop_scratch(rt.store, rt.artifacts, job_id, rt.settings.jobs_dir / job_id)


def _execute(job_id: str, rt: Runtime, job_log: AttemptLog) -> None:
    # Imported here, not at module level: the Celery app (and whatever imports it) loads
    # without torch; only a process that trains pays for it.
    from worker.training.runner import Callbacks as EngineCallbacks
    from worker.training.runner import CheckpointRecord, JobOutcome, TrainingError, run_job

    settings, store, owner, artifacts = rt.settings, rt.store, rt.name, rt.artifacts
    queued = store.get_job(job_id)
    leased_task.refuse_unknown_model_type(
        rt, "job", job_id, queued["spec"] if queued else None, lambda why: store.note_waiting(job_id, why)
    )
    claim = leased_task.claim(rt, "job", job_id, store.claim)
    if claim is None:
        return
    resuming = f", resuming from epoch {claim.resumed_from_epoch}" if claim.resumed_from_epoch else ""
    job_log.begin(claim.attempt, f"attempt {claim.attempt} on {owner}{resuming}")

    def finish(status: Literal["succeeded", "failed", "cancelled"], **outcome: Any) -> bool:
        # the log first: a job read as finished has all of its lines (its event stream ends)
        job_log.flush()
        return store.finish(job_id, owner, status, **outcome)

    try:
        spec = JobSpec.model_validate(claim.spec)
    except ValidationError as e:
        finish("failed", error=leased_task.bad_spec(e))
        return
    work_dir = settings.jobs_dir / job_id

    def on_checkpoint(rec: CheckpointRecord) -> None:
        # the files first, then the row: a listed checkpoint is always in the artifact store
        artifact_sync.push_checkpoint(artifacts, job_id, work_dir, rec.name)
        store.record_checkpoint(
            job_id,
            owner,
            name=rec.name,
            epoch=rec.epoch,
            path=str(rec.path.resolve().relative_to(work_dir.resolve())),
            size_bytes=rec.size_bytes,
            sha256=rec.sha256,
            metrics=finite(rec.metrics),
        )

    def removed(name: str) -> None:
        store.remove_checkpoint(job_id, owner, name)
        artifact_sync.remove_checkpoint(artifacts, job_id, name)

    provenance: dict[str, Any] = {}

    def train() -> Any:
        # Inside the lease: fetching a large dataset keeps the job's heartbeat going.
        started = time.monotonic()
        with ExitStack() as data:
            try:  # the cached dataset stays held (never evicted) while the job trains on it
                # under the tenant and egress rule the job was admitted with (not this
                # worker's own settings: its keys, or their absence, decide nothing)
                dataset_file, found = data.enter_context(
                    local_dataset(
                        artifacts,
                        settings,
                        spec,
                        tenant=claim.tenant,
                        allow_private=claim.egress_private,
                        # a cancel, a shutdown or the time limit ends a fetch from a slow origin
                        should_stop=lease.should_stop,
                        time_limit_s=limit,
                    )
                )
            except DataError as e:
                raise TrainingError(ErrorType.BAD_DATA, str(e)) from None
            except TimeLimitReached as e:
                raise TrainingError(ErrorType.TIME_LIMIT, str(e)) from None
            except Stopped:  # before any training: `stopped` below tells a cancel from a shutdown
                return JobOutcome("cancelled", {}, claim.resumed_from_epoch)
            provenance.update(found)
            data_note = found or spec.dataset.model_dump(mode="json", exclude_none=True)
            log.info("job %s: data ready: %s", job_id, data_note)
            # a job that ran before (on this worker or another) resumes from the bucket's copy
            artifact_sync.pull_resume(artifacts, job_id, store.checkpoints(job_id))
            return run_job(
                spec,
                work_dir,
                callbacks,
                datasets_dir=settings.datasets_dir,
                dataset_file=dataset_file,
                # what the fetch left of the job's time limit
                time_limit_s=limit - (time.monotonic() - started),
                max_parameters=settings.max_parameters,
            )

    def on_epoch(row: dict[str, Any]) -> None:
        store.record_epoch(job_id, owner, finite(row))
        rt.presence.epoch()

    lease = leased_task.hold(rt, Lease, job_id)
    job_log.follow(lease.thread_name)
    callbacks = EngineCallbacks(
        on_epoch=on_epoch,
        on_checkpoint=on_checkpoint,
        on_checkpoint_removed=removed,
        should_stop=lease.should_stop,
    )
    limit = min(spec.training.time_limit_s or math.inf, settings.max_time_limit_s)
    outcome = leased_task.run_engine(
        "job",
        job_id,
        lease,
        train,
        lambda error: finish("failed", error=error),
        retry_infrastructure=True,
    )
    if outcome is None:
        return

    if outcome.resumed_from_epoch != claim.resumed_from_epoch:
        store.note_resumed_from(job_id, claim.attempt, outcome.resumed_from_epoch)
    if provenance:  # a dataset by URI: the object this job trained on, for reproducibility
        outcome.result["environment"]["dataset"] = provenance
    result = finite(outcome.result)
    if outcome.status == "succeeded":
        log.info("job %s: succeeded (best epoch %s)", job_id, result.get("best_epoch"))
        finish("succeeded", result=result)
        return
    leased_task.stopped(
        rt,
        "job",
        job_id,
        lease,
        task=RUN_JOB_TASK,
        release=store.release,
        # nothing trained (cancelled in its data fetch): no result, as for a queued job
        cancel=lambda: finish("cancelled", result=result or None),
    )
