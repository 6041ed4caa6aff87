"""/v1/datasets: upload (CSV, Parquet or NPZ) or register by URI, list with the built-in
datasets, read, delete."""

from __future__ import annotations

import os
from pathlib import PurePath, PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import ArtifactsDep, RemoteDep, SettingsDep, StoreDep, TenantDep
from service.api.errors import BadRequest
from service.api.schemas import Dataset, DatasetList
from service.api.text_guard import find_bad_text
from service.contract.architecture import BUILTIN_SHAPES
from service.contract.data_sources import data_sources
from service.contract.errors import Conflict, NotFound, SpecError, TooLarge, Unavailable
from service.contract.spec import UriDataset
from service.contract.urls import redact_url
from service.data import uri as dataset_uri
from service.data.buckets import BucketUnreachable
from service.data.columns import shown
from service.data.datafile import DataError, ParsedDataset, parse_upload, save_canonical
from service.data.parsed import Task
from service.store.artifacts import dataset_key, remove_dataset_file
from service.store.repository import Row, new_id

router = APIRouter(prefix="/v1", tags=["datasets"])


class DatasetRef(BaseModel):
    """A dataset registered by reference (JSON body): the API reads the object once, bounded by
    REGTRAIN_MAX_DATASET_BYTES, and keeps its canonical form like an upload's."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="s3://bucket/key or https://host/path")
    format: Literal["parquet", "csv", "npz"] | None = Field(None, description="Default: from the suffix.")
    target: str | None = Field(None, max_length=300, description="The column to predict (default: the last).")
    task: Literal["classification", "regression"] | None = None
    name: str | None = Field(None, max_length=300, description="Shown back; default: the URI's last part.")


_BOTH_BODIES = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": DatasetRef.model_json_schema(ref_template="#/components/schemas/{model}")
            }
        }
    }
}


@router.post("/datasets", status_code=201, response_model=Dataset, openapi_extra=_BOTH_BODIES)
async def upload_dataset(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    artifacts: ArtifactsDep,
    tenant: TenantDep,
    remote: RemoteDep,
    file: Annotated[
        UploadFile | None,
        File(description="CSV with a header row, Parquet, or NPZ with arrays X and y."),
    ] = None,
    target: Annotated[
        str | None, Form(max_length=300, description="CSV column to predict (default: the last).")
    ] = None,
    task: Annotated[
        Literal["classification", "regression"] | None,
        Form(description="Default: inferred (few distinct integer targets: classification)."),
    ] = None,
) -> dict[str, Any]:
    """Upload a file (multipart: `file`, `target`, `task`), or register one by reference (JSON:
    `uri`, `format`, `target`, `task`, `name`)."""
    if file is None:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise SpecError(("body", "file"), "send a file (multipart) or a JSON body with a uri")
        try:
            body = await request.json()
        except ValueError:
            raise SpecError(("body",), "the body is not JSON") from None
        try:
            ref = DatasetRef.model_validate(body)
            ds = UriDataset.model_validate(ref.model_dump(exclude={"name"}))
        except ValidationError as e:
            first = e.errors()[0]
            raise SpecError(("body", *_field_of(first)), first["msg"]) from None
        name = ref.name or PurePosixPath(ds.uri.split("?", 1)[0]).name[:300] or "dataset"
        return await _register(ds, name, store, settings, artifacts, tenant, remote)
    return await run_in_threadpool(_upload, file, target, task, store, settings, artifacts, tenant)


def _field_of(error: Any) -> list[str]:
    """The field an error is about: its loc, or for a check over the whole model (loc empty)
    the field its message begins with (`format: the URI's suffix names no format ...`)."""
    if error["loc"]:
        return [str(p) for p in error["loc"]]
    field = str(error["msg"]).removeprefix("Value error, ").partition(":")[0]
    return [field] if field in UriDataset.model_fields else []


async def _register(
    ds: UriDataset,
    name: str,
    store: StoreDep,
    settings: SettingsDep,
    artifacts: ArtifactsDep,
    tenant: str,
    remote: RemoteDep,
) -> dict[str, Any]:
    refusal = data_sources(settings).refusal(tenant, ds.uri)
    if refusal is not None:
        raise SpecError(("body", "uri"), refusal)
    # the API reads it as it would an upload of it: within both limits
    limit = min(settings.max_upload_bytes, settings.max_dataset_bytes)
    # The exchange with the origin waits on the event loop, under its deadline and one of the
    # tenant's remote slots; only the parse takes a request thread.
    with remote.slot(tenant):
        try:
            fetched = await dataset_uri.fetch_async(
                ds,
                artifacts.cache,
                allow_private=settings.admits_private_targets,
                max_bytes=limit,
                deadline_s=settings.remote_fetch_deadline_s,
            )
        except DataError as e:
            raise BadRequest(f"uri: {e}") from None
        except BucketUnreachable:
            raise Unavailable("the bucket of uri cannot be reached; try again") from None
        return await run_in_threadpool(_keep_fetched, ds, fetched, name, store, settings, artifacts, tenant)


def _keep_fetched(
    ds: UriDataset,
    fetched: dataset_uri.Fetched,
    name: str,
    store: StoreDep,
    settings: SettingsDep,
    artifacts: ArtifactsDep,
    tenant: str,
) -> dict[str, Any]:
    offered = [fetched]

    def present() -> dataset_uri.Fetched:
        if not offered:  # evicted between the fetch and the lock (a cache far too small)
            raise Unavailable("the fetched object was evicted from the cache before it was read; try again")
        return offered.pop()

    try:
        with artifacts.cache.hold(present, lambda f: [f.path]) as fetched:  # not evicted while parsed
            data = dataset_uri.parse(
                ds,
                fetched,
                max_rows=settings.max_dataset_rows,
                max_columns=settings.max_dataset_columns,
                max_bytes=settings.max_dataset_bytes,
                max_text_bytes=settings.text_max_bytes,
            )
    except DataError as e:
        raise BadRequest(f"uri: {e}") from None
    return _keep(data, name, store, artifacts, tenant, uri=ds.uri, source_sha256=fetched.sha256)


def _upload(
    file: UploadFile,
    target: str | None,
    task: Task | None,
    store: StoreDep,
    settings: SettingsDep,
    artifacts: ArtifactsDep,
    tenant: str,
) -> dict[str, Any]:
    # The upload is parsed from the spooled file that received it (on disk beyond 1 MB), not
    # copied into memory first.
    upload = file.file
    upload.seek(0, os.SEEK_END)
    if upload.tell() > settings.max_upload_bytes:
        raise TooLarge(f"the upload exceeds {settings.max_upload_bytes} bytes")
    upload.seek(0)
    display_name = PurePath(file.filename or "upload").name[:300] or "upload"
    # Multipart fields pass TextGuard (it reads JSON bodies only): the same refusal here.
    for field, text in (("file", display_name), ("target", target)):
        bad = find_bad_text(text, ("body", field))
        if bad is not None:
            raise SpecError(bad[0], f"text may not contain {bad[1]}")
    try:
        data = parse_upload(
            display_name,
            upload,
            target,
            task,
            max_rows=settings.max_dataset_rows,
            max_columns=settings.max_dataset_columns,
            max_bytes=settings.max_dataset_bytes,
            max_text_bytes=settings.text_max_bytes,
        )
    except DataError as e:
        raise BadRequest(f"{display_name}: {e}") from None
    return _keep(data, display_name, store, artifacts, tenant)


def _keep(
    data: ParsedDataset, name: str, store: StoreDep, artifacts: ArtifactsDep, tenant: str, **source: str
) -> dict[str, Any]:
    dataset_id = new_id("ds-")
    # The file name is the server's id; the user's file name is only shown back. The row comes
    # after the put, so no listed dataset lacks its file.
    key = dataset_key(dataset_id)
    path = artifacts.local_path(key)
    save_canonical(data, path)
    size = path.stat().st_size
    artifacts.put(key, path, keep_copy=False)  # the API reads it no more; workers fetch it
    row = store.create_dataset(
        dataset_id=dataset_id,
        tenant=tenant,
        name=name,
        task=data.task,
        n_samples=data.n_samples,
        n_features=data.n_features,
        n_classes=data.n_classes,
        image_shape=list(data.image_shape) if data.image_shape else None,
        sha256=data.sha256(),
        size_bytes=size,
        columns=None if data.columns is None else {"features": data.columns, "target": data.target_summary()},
        **source,
    )
    return _uploaded(row)


@router.get("/datasets", response_model=DatasetList)
def list_datasets(store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    """Uploads (newest first), then the built-in datasets."""
    builtin = [
        {
            "id": None,
            "name": name,
            "task": shape.task,
            "n_samples": shape.n_samples,
            "n_features": shape.n_features,
            "n_classes": shape.n_outputs if shape.task == "classification" else None,
            "image_shape": list(shape.image_shape) if shape.image_shape else None,
            "sha256": None,
            "builtin": True,
        }
        for name, shape in BUILTIN_SHAPES.items()
    ]
    # without each one's columns: a list of wide files stays small (GET /v1/datasets/{id} has them)
    return {"datasets": [_uploaded(r, columns=False) for r in store.list_datasets(tenant)] + builtin}


@router.get("/datasets/{dataset_id}", response_model=Dataset)
def get_dataset(dataset_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    row = store.get_dataset(dataset_id, tenant)
    if row is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return _uploaded(row)


@router.delete("/datasets/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(dataset_id: str, store: StoreDep, artifacts: ArtifactsDep, tenant: TenantDep) -> Response:
    """Delete an uploaded dataset and its file. One that a queued or running job (or sweep)
    trains on → 409; finished jobs keep their results and checkpoints."""
    outcome = store.delete_dataset(dataset_id, tenant)
    if outcome == "missing":
        raise NotFound(f"no dataset {dataset_id!r}")
    if outcome == "active":
        raise Conflict(f"dataset {dataset_id} is used by a queued or running job or sweep")
    remove_dataset_file(artifacts, dataset_id)
    return Response(status_code=204)


def _uploaded(row: Row, *, columns: bool = True) -> dict[str, Any]:
    keys = ("id", "name", "task", "n_samples", "n_features", "n_classes", "image_shape", "sha256", "uri")
    return {
        **{k: row[k] for k in keys},
        # the uri the tenant registered, shown without a password it may carry (the worker
        # reads the stored one)
        "uri": redact_url(row["uri"]) if row["uri"] else row["uri"],
        "source_sha256": row["source_sha256"],
        "builtin": False,
        "created_at": row["created_at"],
        **(_columns(row) if columns else {}),
    }


def _columns(row: Row) -> dict[str, Any]:
    """`columns` (as inferred) and `target` of a CSV or Parquet file; nothing for NPZ files and
    uploads made before columns were kept."""
    kept = row.get("columns")
    if not kept:
        return {}
    columns = shown(kept["features"])
    if row["uri"]:  # an object read by reference is shown without its content (as its errors are)
        columns = [{**c, "categories": []} for c in columns]
        return {"columns": columns, "target": None}
    return {"columns": columns, "target": kept.get("target")}
