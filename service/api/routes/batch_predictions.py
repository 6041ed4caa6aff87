"""Batch predictions: POST /v1/jobs/{id}/predictions scores a whole dataset on a worker (the
rows of a dataset need not pass through a request body), GET reads its state, GET .../file
streams the predictions from the artifact store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.api.deps import ArtifactsDep, BrokerDep, SettingsDep, StoreDep, TenantDep
from service.api.schemas import JobError
from service.contract.batch_prediction import MEDIA_TYPE, BatchPredictionSpec, PredictionFormat
from service.contract.errors import Conflict, NotFound
from service.store.artifacts import ArtifactMissing, predictions_key
from service.store.batch_predictions import BatchPredictions
from service.store.repository import Row
from service.submission import predictions

router = APIRouter(prefix="/v1", tags=["jobs"])


class BatchPrediction(BaseModel):
    id: str
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    dataset: dict[str, Any]
    checkpoint: str
    format: PredictionFormat
    rows: int | None = None
    size_bytes: int | None = None
    error: JobError | None = None
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


def _document(row: Row) -> dict[str, Any]:
    spec = row["spec"]
    return {
        **{k: row[k] for k in ("id", "job_id", "status", "rows", "size_bytes", "error", "attempts")},
        **{k: row[k] for k in ("created_at", "started_at", "finished_at")},
        "dataset": spec["dataset"],
        "checkpoint": spec["checkpoint"],
        "format": spec["format"],
    }


def _found(store: StoreDep, tenant: str, job_id: str, prediction_id: str) -> Row:
    row = BatchPredictions(store.engine).get(job_id, prediction_id, tenant)
    if row is None:
        raise NotFound(f"job {job_id!r} has no batch prediction {prediction_id!r}")
    return row


@router.post("/jobs/{job_id}/predictions", status_code=202, response_model=BatchPrediction)
def create_batch_prediction(
    job_id: str,
    body: BatchPredictionSpec,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
    tenant: TenantDep,
) -> dict[str, Any]:
    """Score a dataset (an upload's `id`, or a `uri` read under the job's data-source grants and
    egress rule) with one of the job's checkpoints, on a worker, in bounded batches. Poll
    `GET /v1/jobs/{id}/predictions/{pid}`; once `succeeded`, `.../file` holds one row per input
    row: `prediction`, `target` and, for classification, `p_<class>` per class."""
    return _document(predictions.submit(body, job_id, store, broker, tenant, settings))


@router.get("/jobs/{job_id}/predictions/{prediction_id}", response_model=BatchPrediction)
def get_batch_prediction(
    job_id: str, prediction_id: str, store: StoreDep, tenant: TenantDep
) -> dict[str, Any]:
    """The batch prediction's state: `status`, `rows` once it succeeded, `error` (type and
    message) once it failed."""
    return _document(_found(store, tenant, job_id, prediction_id))


@router.get(
    "/jobs/{job_id}/predictions/{prediction_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {m: {} for m in MEDIA_TYPE.values()}, "description": "The predictions"}},
)
def download_batch_predictions(
    job_id: str, prediction_id: str, store: StoreDep, artifacts: ArtifactsDep, tenant: TenantDep
) -> StreamingResponse:
    """The predictions as CSV or Parquet, streamed from the artifact store; 409 until the batch
    prediction has succeeded."""
    row = _found(store, tenant, job_id, prediction_id)
    if row["status"] != "succeeded":
        raise Conflict(f"batch prediction {prediction_id} is {row['status']}, not succeeded")
    fmt = row["spec"]["format"]
    try:
        size, chunks = artifacts.stream(predictions_key(job_id, prediction_id, fmt))
    except ArtifactMissing:
        raise NotFound(f"the file of batch prediction {prediction_id!r} is gone") from None
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPE[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{job_id}-{prediction_id}.{fmt}"',
            "Content-Length": str(size),
        },
    )
