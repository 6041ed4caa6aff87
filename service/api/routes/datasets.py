"""/v1/datasets: upload (CSV, Parquet or NPZ), list with the built-in datasets, read, delete."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile

from service.api.deps import SettingsDep, StoreDep, TenantDep
from service.api.errors import BadRequest
from service.api.schemas import Dataset, DatasetList
from service.api.text_guard import find_bad_text
from service.contract.architecture import BUILTIN_SHAPES
from service.contract.errors import Conflict, NotFound, SpecError, TooLarge
from service.data.datafile import DataError, parse_upload, save_canonical
from service.store.artifacts import remove_dataset_file
from service.store.repository import Row, new_id

router = APIRouter(prefix="/v1", tags=["datasets"])


@router.post("/datasets", status_code=201, response_model=Dataset)
def upload_dataset(
    file: Annotated[
        UploadFile, File(description="CSV with a header row, Parquet, or NPZ with arrays X and y.")
    ],
    store: StoreDep,
    settings: SettingsDep,
    tenant: TenantDep,
    target: Annotated[
        str | None, Form(max_length=300, description="CSV column to predict (default: the last).")
    ] = None,
    task: Annotated[
        Literal["classification", "regression"] | None,
        Form(description="Default: inferred (few distinct integer targets: classification)."),
    ] = None,
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
        )
    except DataError as e:
        raise BadRequest(f"{display_name}: {e}") from None
    dataset_id = new_id("ds-")
    # The file name is the server's id; the user's file name is only shown back.
    path = settings.datasets_dir / f"{dataset_id}.npz"
    save_canonical(data, path)
    row = store.create_dataset(
        dataset_id=dataset_id,
        tenant=tenant,
        name=display_name,
        task=data.task,
        n_samples=data.n_samples,
        n_features=data.n_features,
        n_classes=data.n_classes,
        image_shape=list(data.image_shape) if data.image_shape else None,
        sha256=data.sha256(),
        size_bytes=path.stat().st_size,
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
    return {"datasets": [_uploaded(r) for r in store.list_datasets(tenant)] + builtin}


@router.get("/datasets/{dataset_id}", response_model=Dataset)
def get_dataset(dataset_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    row = store.get_dataset(dataset_id, tenant)
    if row is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return _uploaded(row)


@router.delete("/datasets/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(dataset_id: str, store: StoreDep, settings: SettingsDep, tenant: TenantDep) -> Response:
    """Delete an uploaded dataset and its file. One that a queued or running job (or sweep)
    trains on → 409; finished jobs keep their results and checkpoints."""
    outcome = store.delete_dataset(dataset_id, tenant)
    if outcome == "missing":
        raise NotFound(f"no dataset {dataset_id!r}")
    if outcome == "active":
        raise Conflict(f"dataset {dataset_id} is used by a queued or running job or sweep")
    remove_dataset_file(settings, dataset_id)
    return Response(status_code=204)


def _uploaded(row: Row) -> dict[str, Any]:
    keys = ("id", "name", "task", "n_samples", "n_features", "n_classes", "image_shape", "sha256")
    return {**{k: row[k] for k in keys}, "builtin": False, "created_at": row["created_at"]}
