"""What POST /v1/jobs/{id}/predictions asks: a dataset scored with one of the job's checkpoints,
written as CSV or Parquet (the worker's side: worker/prediction_task.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.contract.spec import Strict, UploadedDataset, UriDataset

PredictionFormat = Literal["csv", "parquet"]
MEDIA_TYPE: dict[str, str] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class BatchPredictionSpec(Strict):
    """A dataset to score: read as a training dataset is (its `target` column, default the last,
    is left out of the features and written beside the predictions), under the same limits
    (REGTRAIN_MAX_DATASET_BYTES, _ROWS, _COLUMNS) and, by URI, under the same data-source grants
    and egress rule as the job."""

    dataset: UploadedDataset | UriDataset = Field(
        description='An upload (`{"id"}`) or an object by URI (`{"uri", "format", "target"}`).'
    )
    checkpoint: str = Field(
        "best", max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", description='"best", "final" or "epoch-K".'
    )
    format: PredictionFormat = Field(
        "csv",
        description="The file's format: one row per input row, in order, with `prediction`, "
        "`target` (the dataset's own) and, for classification, one `p_<class>` column per class.",
    )
