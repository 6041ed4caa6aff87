"""Models for use: POST /v1/jobs/{id}/predict applies a trained job's model to raw inputs, and
GET /v1/jobs/{id}/checkpoints/{name}/sidecar hands out what using the weights elsewhere needs
(the filled spec, input shape, class labels and the standardization fitted on the train split)."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import ArtifactsDep, StoreDep, TenantDep
from service.api.predict import checkpoint_file, read_sidecar
from service.api.schemas import FILLED_SPEC
from service.contract.errors import NotFound
from service.store.repository import Row

router = APIRouter(prefix="/v1", tags=["jobs"])

MAX_ROWS = 10_000
# The largest body this route takes (BodyLimit reads it): 10,000 rows of a few dozen features,
# or about 1,000 rows of 784 (an MNIST image) written out in full; the client splits larger
# inputs under it, and a whole dataset is scored by POST /v1/jobs/{id}/predictions instead.
MAX_BODY_BYTES = 16 * 1024 * 1024
PREDICT_PATH = re.compile(r"^/v1/jobs/[^/]+/predict$")
TOO_LARGE = (
    f"send at most {MAX_ROWS} rows and {MAX_BODY_BYTES} bytes per request to /predict: split the "
    "rows over several requests (the Python client's predict does), or score a dataset with "
    "POST /v1/jobs/{id}/predictions"
)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description="Rows in the dataset's raw feature space (the server applies the job's "
        "standardization): a list of features each, or nested to the input's shape (digits: "
        "64 numbers, or 1x8x8). A job on a CSV or Parquet file takes its rows as they come: a "
        "list in file column order (the target left out) or an object keyed by column name, "
        "with strings and nulls (a gap is imputed, an unseen category is 'other'). A text model "
        "(rnn, transformer, conv1d on a text column) takes raw strings: a row is the text, [text] "
        "or {column: text}, tokenized by the job's train-split vocabulary. A model on sequences "
        "of frames (an NPZ with lengths) takes a row as a list of 1..T frames of F numbers, "
        "padded with zero frames (trailing all-zero frames are padding).",
    )
    checkpoint: str = Field("best", max_length=100, description='"best", "final" or "epoch-K".')
    probabilities: bool = Field(
        False,
        description="Also answer each row's class probabilities and the `classes` they are in "
        "the order of (classification only: a regression job answers 422).",
    )


class Predictions(BaseModel):
    predictions: list[Any] = Field(
        description="Class labels for classification, values in the target's units for regression."
    )
    probabilities: list[list[float]] | None = Field(
        None, description='With `"probabilities": true`: one list per row, in the order of `classes`.'
    )
    classes: list[Any] | None = Field(
        None, description='With `"probabilities": true`: the class labels, by probability column.'
    )
    checkpoint: str
    epoch: int


class Sidecar(BaseModel):
    """A checkpoint's JSON sidecar: what rebuilds the model and feeds it without the server."""

    model_config = ConfigDict(extra="allow")

    spec: dict[str, Any] = Field(title=FILLED_SPEC, description="The JobSpec the weights were trained on.")
    epoch: int
    metrics: dict[str, Any] | None = Field(None, description="The metrics row of that epoch.")
    task: Literal["classification", "regression"] | None = None
    input_shape: list[int] | None = Field(None, description="One sample's shape, as the model takes it.")
    classes: list[Any] | None = Field(None, description="Class labels by output index (classification).")
    standardization: dict[str, Any] | None = Field(
        None, description="`mean`, `std` and `shape` of the inputs; `target_mean`, `target_std`."
    )
    preprocessing: dict[str, Any] | None = Field(
        None,
        description="A CSV's or Parquet file's columns as fitted on the train split (imputation, "
        "one-hot categories with an 'other' slot), applied before `standardization`: "
        "service.data.columns describes its JSON and holds the reference function (encode_rows).",
    )


def _checkpoint_or_404(store: StoreDep, tenant: str, job_id: str, name: str) -> Row:
    if store.get_job(job_id, tenant) is None:
        raise NotFound(f"no job {job_id!r}")
    row = store.checkpoint(job_id, name)
    if row is None:
        raise NotFound(f"job {job_id} has no checkpoint {name!r}")
    return row


@router.post(
    "/jobs/{job_id}/predict",
    response_model=Predictions,
    response_model_exclude_none=True,
    description="Predict with one of the job's checkpoints (default `best`). The model is loaded "
    "once and kept in memory for the next request.\n\n"
    f"The body holds at most {MAX_ROWS} rows and {MAX_BODY_BYTES} bytes (a larger one answers 413 "
    "naming both): split larger inputs (the Python client's `predict` does), or score a whole "
    "dataset with `POST /v1/jobs/{id}/predictions`.",
)
def predict(
    job_id: str,
    body: PredictRequest,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    tenant: TenantDep,
) -> dict[str, Any]:
    row = _checkpoint_or_404(store, tenant, job_id, body.checkpoint)
    answer = request.app.state.predictors.predict(
        artifacts, job_id, row, body.inputs, probabilities=body.probabilities
    )
    return {**answer, "checkpoint": row["name"], "epoch": row["epoch"]}


@router.get("/jobs/{job_id}/checkpoints/{name}/sidecar", response_model=Sidecar)
def checkpoint_sidecar(
    job_id: str, name: str, store: StoreDep, artifacts: ArtifactsDep, tenant: TenantDep
) -> dict[str, Any]:
    """The checkpoint's JSON sidecar: `spec`, `task`, `input_shape`, `classes`,
    `standardization` (`mean`, `std`, `shape`, `target_mean`, `target_std`), `epoch`, `metrics`,
    versions and the data's sha256."""
    row = _checkpoint_or_404(store, tenant, job_id, name)
    with checkpoint_file(artifacts, job_id, row) as weights:
        return read_sidecar(weights)
