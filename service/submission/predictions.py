"""Admitting a batch prediction: the tenant's job and its checkpoint exist, the dataset is one the
tenant may read (its upload, or a URI its data-source grants and the egress rule allow), then the
row is stored and the broker rung (the worker: worker/prediction_task.py)."""

from __future__ import annotations

from service.contract.batch_prediction import BatchPredictionSpec
from service.contract.data_sources import data_sources
from service.contract.dataset_kinds import kind_of
from service.contract.errors import NotFound, SpecError
from service.queue.broker import Broker
from service.settings import Settings
from service.store.batch_predictions import BatchPredictions
from service.store.repository import Repository, Row
from service.submission.jobs import dataset_held, refuse_over_capacity, send


def submit(
    spec: BatchPredictionSpec,
    job_id: str,
    store: Repository,
    broker: Broker,
    tenant: str,
    settings: Settings,
) -> Row:
    """Store a queued batch prediction of the tenant's job and ring the broker on the job's
    queue. NotFound for another tenant's job (or none) and a checkpoint the job does not have;
    SpecError naming `dataset` for data the tenant may not read; AtCapacity (429) when the
    tenant has REGTRAIN_MAX_ACTIVE_JOBS jobs, sweeps and batch predictions queued or running."""
    job = store.get_job(job_id, tenant)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    if store.checkpoint(job_id, spec.checkpoint) is None:
        raise NotFound(f"job {job_id} has no checkpoint {spec.checkpoint!r}")
    ds = spec.dataset
    dataset_id, uri = kind_of(ds).upload_id(ds), kind_of(ds).uri(ds)
    if dataset_id is not None and store.get_dataset(dataset_id, tenant) is None:
        raise SpecError(("body", "dataset", "id"), f"no dataset with id {dataset_id!r}")
    if uri is not None:
        refusal = data_sources(settings).refusal(tenant, uri)
        if refusal is not None:
            raise SpecError(("body", "dataset", "uri"), refusal)
    predictions = BatchPredictions(store.engine)
    # A worker's time like a job's: counted against the tenant's REGTRAIN_MAX_ACTIVE_JOBS with
    # its jobs and sweeps, so no tenant fills the queues with scoring either.
    refuse_over_capacity(store.active_work(tenant) + predictions.active(tenant), settings.max_active_jobs)
    with dataset_held(("body",), dataset_id):
        row = predictions.create(
            job_id=job_id,
            tenant=tenant,
            spec=spec.model_dump(mode="json", exclude_none=True),
            queue=job["queue"],
            # the egress rule recorded with the job, whatever this server's now: the worker
            # fetches a dataset by URI under it, as it fetched the job's own
            egress_private=bool(job["egress_private"]),
            dataset_id=dataset_id,
        )
    send(broker.enqueue_batch_prediction, lambda i, e: predictions.fail_queued(i, e), row["id"], row["queue"])
    return row
