"""/v1/jobs: submit, dry-run, read, list, cancel, delete, metrics and checkpoints."""

from __future__ import annotations

import os
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api import render
from service.api.deps import (
    ArtifactsDep,
    BrokerDep,
    JobReadsDep,
    RemoteDep,
    SettingsDep,
    StoreDep,
    TenantDep,
)
from service.api.predict import exported_file, weights_key
from service.api.routes import lookup, pages
from service.api.routes.documents import json_document
from service.api.schemas import CheckpointList, Job, JobList, Metrics, Validation
from service.contract.dataset_kinds import kind_of
from service.contract.documents import job_document
from service.contract.errors import Conflict, NotFound
from service.contract.exports import EXPORT_SUFFIX, ExportFormat, ExportInputDtype
from service.contract.spec import JobSpec
from service.store.artifacts import ArtifactMissing, file_chunks, remove_job_files
from service.store.repository import Row
from service.submission import jobs

router = APIRouter(prefix="/v1", tags=["jobs"])

# pydantic types json_schema_extra as a dict or a callable; JobSpec's is the dict it declares
_EXAMPLE = JobSpec.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
SpecBody = Annotated[
    JobSpec,
    Body(
        openapi_examples={
            "digits-l2-dropout": {"summary": "An MLP on digits with L2 and dropout", "value": _EXAMPLE},
            "minimal": {
                "summary": "Only the required fields",
                "value": {"dataset": {"name": "iris"}, "model": {"type": "mlp"}},
            },
        }
    ),
]


def _job_or_404(store: StoreDep, tenant: str, job_id: str) -> Row:
    return lookup.found("job", job_id, store.get_job(job_id, tenant))


async def _checked_remotely(
    spec: JobSpec, store: StoreDep, settings: SettingsDep, tenant: str, remote: RemoteDep
) -> jobs.CheckedSpec | None:
    """A spec whose dataset is at a URI, checked (in the thread pool) and its object asked of its
    origin on the event loop (jobs.check_uri: no request thread waits on an origin); None for
    any other spec, which the sync part checks in the same hop as the rest of its work."""
    if kind_of(spec.dataset).uri(spec.dataset) is None:
        return None
    checked = await run_in_threadpool(jobs.check_spec, spec, store, tenant, settings)
    await jobs.check_uri(checked, settings, remote, tenant)
    return checked


@router.post("/jobs", status_code=202, response_model=Job)
async def create_job(
    spec: SpecBody,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
    tenant: TenantDep,
    remote: RemoteDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Queue a training job. Only `dataset` and `model` are required."""
    checked = await _checked_remotely(spec, store, settings, tenant, remote)
    return await run_in_threadpool(
        _create_job, spec, checked, store, broker, settings, tenant, idempotency_key
    )


def _create_job(
    spec: JobSpec,
    checked: jobs.CheckedSpec | None,
    store: StoreDep,
    broker: BrokerDep,
    settings: SettingsDep,
    tenant: str,
    idempotency_key: str | None,
) -> Response:
    checked = checked or jobs.check_spec(spec, store, tenant, settings)
    job, _ = jobs.submit(checked, store, broker, tenant, idempotency_key, max_active=settings.max_active_jobs)
    # Sent as built (json_document): a response model would be checked in one more hop.
    doc = render.job_documents(store, [job])[0]
    return json_document(doc, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.post("/jobs:validate", response_model=Validation)
async def validate_job(
    spec: SpecBody, store: StoreDep, settings: SettingsDep, tenant: TenantDep, remote: RemoteDep
) -> dict[str, Any]:
    """Dry run: the filled spec, its parameter count and memory estimate; nothing is queued."""
    checked = await _checked_remotely(spec, store, settings, tenant, remote)
    if checked is None:
        checked = await run_in_threadpool(jobs.check_spec, spec, store, tenant, settings)
    shape = checked.shape
    return {
        "spec": checked.spec.model_dump(mode="json"),
        "parameters": checked.parameters,
        "memory_bytes_per_batch": checked.memory_bytes_per_batch,
        "task": shape.task if shape else None,
        "n_features": shape.n_features if shape else None,
        "n_outputs": shape.n_outputs if shape else None,
        "queue": checked.queue,
    }


@router.get("/jobs", response_model=JobList)
async def list_jobs(reads: JobReadsDep, tenant: TenantDep, query: pages.PageDep) -> Response:
    """Newest first; follow `next_cursor` for older jobs."""
    page, next_cursor = query.split(await reads.list_jobs(tenant, **query.fetch_args()))
    # Each row holds its history, read in the same statement (store/job_reads.py).
    docs = [job_document(row, row["history"]) for row in page]
    return json_document({"jobs": docs, "next_cursor": next_cursor})


@router.get("/jobs/{job_id}", response_model=Job)
async def get_job(job_id: str, reads: JobReadsDep, tenant: TenantDep) -> Response:
    found = await reads.job_with_history(job_id, tenant)
    if found is None:
        raise NotFound(f"no job {job_id!r}")
    job, history = found
    return json_document(job_document(job, history))


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=Job)
def cancel_job(job_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops within a heartbeat, keeping its
    last checkpoint (and `final`). A finished job → 409."""
    outcome = store.cancel(job_id, tenant)
    job = lookup.cancelled("job", job_id, outcome, lambda: store.get_job(job_id, tenant))
    return render.job_documents(store, [job])[0]


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response)
def delete_job(job_id: str, store: StoreDep, artifacts: ArtifactsDep, tenant: TenantDep) -> Response:
    """Delete a finished job: its row, metrics, checkpoints and every file it wrote (weights,
    sidecars, resume state, exports). A queued or running job → 409 (cancel it first)."""
    outcome = store.delete_job(job_id, tenant)
    if outcome == "missing":
        raise NotFound(f"no job {job_id!r}")
    if outcome == "active":
        raise Conflict(f"job {job_id} is queued or running: cancel it first, then delete it")
    remove_job_files(artifacts, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/metrics", response_model=Metrics)
def job_metrics(job_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    _job_or_404(store, tenant, job_id)
    return {"epochs": store.metrics(job_id)}


@router.get("/jobs/{job_id}/checkpoints", response_model=CheckpointList)
def job_checkpoints(job_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    _job_or_404(store, tenant, job_id)
    return {"checkpoints": store.checkpoints(job_id)}


@router.get(
    "/jobs/{job_id}/checkpoints/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "safetensors weights, or a TorchScript / ONNX model taking raw inputs",
        },
        307: {"description": "With REGTRAIN_ARTIFACTS_PRESIGN: a presigned URL of the weights in the bucket"},
    },
)
def download_checkpoint(
    job_id: str,
    name: str,
    store: StoreDep,
    artifacts: ArtifactsDep,
    tenant: TenantDep,
    format: Annotated[
        Literal["safetensors", "torchscript", "onnx"],
        Query(
            description="safetensors: the state dict (load it into the model the spec builds); "
            "torchscript or onnx: the whole model, standardizing raw inputs itself "
            "(classification returns logits; class labels are in the sidecar, and in an ONNX "
            "file's metadata_props with task, input_columns and regtrain_job_id)."
        ),
    ] = "safetensors",
    input_dtype: Annotated[
        ExportInputDtype,
        Query(
            description="format=onnx: the dtype the file's input is typed as (onnxruntime feeds "
            "no other; the graph casts it to float32): float64 for numpy's and pandas' floats, "
            "int64 for integers. TorchScript takes every numeric dtype in one file."
        ),
    ] = "float32",
) -> Response:
    """The checkpoint's weights (default), or the model exported as TorchScript or ONNX."""
    _job_or_404(store, tenant, job_id)
    row = store.checkpoint(job_id, name)
    if row is None:
        raise NotFound(f"job {job_id} has no checkpoint {name!r}")
    filename = f"{job_id}-{row['name']}"
    if format != "safetensors":
        exported = _export(store, artifacts, tenant, job_id, row, format, input_dtype)
        if format == "onnx" and input_dtype != "float32":
            filename += f"-{input_dtype}"
        return StreamingResponse(
            file_chunks(exported),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{filename}{EXPORT_SUFFIX[format]}"',
                "Content-Length": str(os.fstat(exported.fileno()).st_size),
            },
        )
    key = weights_key(job_id, row)
    if artifacts.presign:
        return RedirectResponse(artifacts.presigned_url(key), status_code=307)
    try:
        size, chunks = artifacts.stream(key)  # opened here: a missing file is a 404
    except ArtifactMissing:
        raise NotFound(f"the file of checkpoint {row['name']!r} is gone") from None
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.safetensors"',
            "Content-Length": str(size),
        },
    )


def _export(
    store: StoreDep,
    artifacts: ArtifactsDep,
    tenant: str,
    job_id: str,
    row: Row,
    fmt: ExportFormat,
    input_dtype: ExportInputDtype,
) -> BinaryIO:
    """exported_file, for a job that may be deleted while it is exported (a DELETE racing the
    request): whatever the export then trips on (its weights or its folder gone under it: a
    FileNotFoundError, or torch's RuntimeError for a missing folder), and an export finished as
    the job went, answer 404, and none of the job's files stay behind (the export may have made
    its folder again after the DELETE removed it; a job's id is never reused)."""
    try:
        exported: BinaryIO | None = exported_file(artifacts, job_id, row, fmt, input_dtype)
    except Exception:
        if store.get_job(job_id, tenant) is not None:
            raise
        exported = None
    if exported is not None and store.get_job(job_id, tenant) is not None:
        return exported
    if exported is not None:
        exported.close()
    remove_job_files(artifacts, job_id)
    raise NotFound(f"no job {job_id!r}")
