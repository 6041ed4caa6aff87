"""The documents the server answers, typed. They keep any field a newer server adds
(extra="allow"); `SCHEMA` names the component of the server's /openapi.json each one reads,
which a test checks against a live server. Job and Sweep carry methods that act on them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TextIO, overload

from pydantic import BaseModel, ConfigDict, PrivateAttr

from regtrain_client.frames import EpochRows, dataframe
from regtrain_client.progress import SweepProgress
from regtrain_client.sse import Event

if TYPE_CHECKING:
    import pandas as pd

    from regtrain_client.client import Client

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Document(BaseModel):
    # A newer server may add fields: keep them rather than refuse the answer.
    model_config = ConfigDict(extra="allow")
    SCHEMA: ClassVar[str | None] = None


class HistoryEntry(Document):
    SCHEMA = "HistoryEntry"
    status: str
    at: datetime
    attempt: int | None = None
    worker: str | None = None
    resumed_from_epoch: int | None = None
    message: str | None = None


class Progress(Document):
    SCHEMA = "Progress"
    epoch: int = 0
    epochs: int = 0
    fraction: float = 0.0


class JobError(Document):
    SCHEMA = "JobError"
    type: str
    message: str


class ClassMetrics(Document):
    precision: float
    recall: float
    f1: float
    support: int


class ClassReport(Document):
    """A classification's test report: per class (keyed by the label as a string), the macro F1
    and the confusion matrix (rows true, columns predicted, in the sidecar's `classes` order)."""

    per_class: dict[str, ClassMetrics]
    macro_f1: float | None = None
    confusion_matrix: list[list[int]]


class JobResult(Document):
    best_epoch: int | None = None
    # the test scalars (`test_accuracy`, `test_r2`, ...) and, for classification, `per_class`,
    # `macro_f1` and `confusion_matrix` (read them typed through `report`)
    metrics: dict[str, Any] = {}
    # the same metrics measured on the `best` checkpoint's weights (the ones users download)
    best_checkpoint_metrics: dict[str, Any] | None = None
    weight_sparsity: float | None = None
    weight_l2_norm: float | None = None
    epochs_completed: int | None = None

    @property
    def report(self) -> ClassReport | None:
        """The classification report of the test metrics, typed; None for regression."""
        return _report(self.metrics)

    @property
    def best_checkpoint_report(self) -> ClassReport | None:
        return _report(self.best_checkpoint_metrics)


def _report(metrics: dict[str, Any] | None) -> ClassReport | None:
    if not metrics or "per_class" not in metrics:
        return None
    return ClassReport.model_validate(metrics)


class EpochMetrics(Document):
    """One row of GET /v1/jobs/{id}/metrics; validation/test fields depend on the task."""

    epoch: int
    train_loss: float | None = None
    data_loss: float | None = None
    penalty: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    train_eval_loss: float | None = None
    generalization_gap: float | None = None
    weight_l2_norm: float | None = None
    weight_sparsity: float | None = None
    lr: float | None = None
    seconds: float | None = None
    samples_per_second: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Checkpoint(Document):
    SCHEMA = "Checkpoint"
    name: str
    epoch: int
    size_bytes: int
    sha256: str
    metrics: dict[str, Any] | None = None


class Predictions(Document):
    """A predict with `probabilities=True`: the labels, each row's class probabilities (in the
    order of `classes`) and the classes."""

    SCHEMA = "Predictions"
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    checkpoint: str
    epoch: int


class BatchPrediction(Document):
    """A batch prediction (POST /v1/jobs/{id}/predictions): a dataset scored by a worker; its
    file (`Client.download_predictions`) holds a row per input row."""

    SCHEMA = "BatchPrediction"
    id: str
    job_id: str
    status: str
    format: str
    checkpoint: str
    rows: int | None = None
    error: JobError | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class LogLine(Document):
    """A line the worker logged for a job; `cursor` is where Client.logs(job_id, cursor) reads
    on from."""

    SCHEMA = "LogLine"
    at: datetime
    attempt: int
    level: str
    message: str
    cursor: str | None = None


class LogPage(Document):
    """A page of a job's log: its lines, and the cursor to read the lines written after them."""

    SCHEMA = "JobLogs"
    lines: list[LogLine]
    next_cursor: str | None = None


class _Handle(Document):
    _client: Client | None = PrivateAttr(None)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("this object was not made by a Client")
        return self._client


class Job(_Handle):
    """A job as GET /v1/jobs/{id} returns it, with methods to act on it."""

    SCHEMA = "Job"
    id: str
    name: str | None = None
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    history: list[HistoryEntry] = []
    progress: Progress = Progress()
    latest_metrics: dict[str, Any] | None = None
    result: JobResult | None = None
    error: JobError | None = None
    spec: dict[str, Any] = {}

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return (end - self.started_at).total_seconds()

    def refresh(self) -> Job:
        return self.client.job(self.id)

    def metrics(self) -> EpochRows[EpochMetrics]:
        """One row per epoch; `.to_dataframe()` makes a DataFrame indexed by epoch."""
        return self.client.metrics(self.id)

    def checkpoints(self) -> list[Checkpoint]:
        return self.client.checkpoints(self.id)

    def download(self, name: str = "best", path: str | Path | None = None, *, sidecar: bool = True) -> Path:
        return self.client.download(self.id, name, path, sidecar=sidecar)

    def sidecar(self, name: str = "best") -> dict[str, Any]:
        return self.client.sidecar(self.id, name)

    def cancel(self) -> Job:
        return self.client.cancel(self.id)

    def delete(self) -> None:
        """Delete the finished job and its files (Conflict while queued or running)."""
        self.client.delete(self.id)

    def events(self, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        return self.client.events(self.id, last_event_id=last_event_id, timeout=timeout)

    @overload
    def predict(
        self, inputs: Any, checkpoint: str = "best", *, probabilities: Literal[False] = False
    ) -> list[Any]: ...
    @overload
    def predict(
        self, inputs: Any, checkpoint: str = "best", *, probabilities: Literal[True]
    ) -> Predictions: ...
    def predict(
        self, inputs: Any, checkpoint: str = "best", *, probabilities: bool = False
    ) -> list[Any] | Predictions:
        return self.client.predict(self.id, inputs, checkpoint=checkpoint, probabilities=probabilities)  # type: ignore[call-overload, no-any-return]

    def wait(
        self,
        progress: bool | Callable[[EpochMetrics, Job], None] = False,
        *,
        timeout: float | None = None,
        check: bool = False,
        out: TextIO | None = None,
    ) -> Job:
        """Follow the job's event stream until it finishes; returns the finished job.

        progress=True draws a tqdm.auto bar where tqdm is installed, else prints a line per
        epoch (to stderr, or `out`); a callable gets each epoch's row and the job instead.
        check=True raises JobFailed unless it succeeded."""
        return self.client.wait(self.id, progress=progress, timeout=timeout, check=check, out=out)


class Trial(Document):
    SCHEMA = "SweepTrial"
    index: int | None = None
    params: dict[str, Any] = {}
    status: str | None = None
    metrics: dict[str, Any] | None = None
    score: float | None = None
    fold_scores: list[float] | None = None
    vectorized: bool | None = None
    error: JobError | None = None
    epochs_trained: int | None = None
    pruned_at_epoch: int | None = None
    reason: str | None = None
    progress: dict[str, Any] | None = None


class SweepBest(Document):
    SCHEMA = "SweepBest"
    index: int | None = None
    params: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    score: float | None = None
    score_std: float | None = None
    job_id: str | None = None
    test_metrics: dict[str, Any] | None = None


class SweepStop(Document):
    """Which budget (spec.budget) ended a sweep's search, when, and how."""

    SCHEMA = "SweepStop"
    budget: str
    at: datetime | None = None
    detail: str | None = None


class Dataset(Document):
    """An uploaded or registered dataset (id set) or a built-in one (id None), as
    GET /v1/datasets lists them."""

    SCHEMA = "Dataset"
    id: str | None = None
    name: str
    task: str
    n_samples: int | None = None
    n_features: int | None = None
    n_classes: int | None = None
    image_shape: list[int] | None = None
    sha256: str | None = None
    builtin: bool = False
    created_at: datetime | None = None
    uri: str | None = None
    source_sha256: str | None = None
    # a CSV's or Parquet file's columns as inferred: [{"name", "type", "missing", "distinct",
    # "categories"}], and its target: {"name", "distribution"}
    columns: list[dict[str, Any]] | None = None
    target: dict[str, Any] | None = None


class Worker(Document):
    """A worker process of the server's fleet, as GET /v1/workers lists it. `busy_with` is the
    id of what it trains when that is the caller's own (else None, with `busy` True)."""

    SCHEMA = "Worker"
    name: str
    celery_name: str | None = None
    host: str
    queues: list[str] = []
    device: str | None = None
    busy: bool = False
    busy_with: str | None = None
    busy_kind: str | None = None  # "job", "sweep" or "unit"
    epochs_per_second: float = 0.0
    started_at: datetime | None = None
    last_heartbeat: datetime
    version: str | None = None


class Sweep(_Handle):
    """A sweep as GET /v1/sweeps/{id} returns it."""

    SCHEMA = "Sweep"
    id: str
    name: str | None = None
    status: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trials: list[Trial] = []
    leaderboard: list[int] = []
    best: SweepBest | None = None
    best_known_at: datetime | None = None  # when the best trial's score was first known
    objective: dict[str, Any] = {}
    error: JobError | None = None
    spec: dict[str, Any] = {}
    units: list[dict[str, Any]] = []
    objectives: list[dict[str, Any]] = []
    pareto: list[int] | None = None
    warnings: list[str] = []
    stopped_by: SweepStop | None = None  # the budget that ended the search, when one did
    # which swept fields mattered, {field: importance} summing to 1 (fANOVA), once it ended
    param_importances: dict[str, float] | None = None
    study: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def events(self, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        """The sweep's Server-Sent Events (trial, status) until `done`; see Client.sweep_events."""
        return self.client.sweep_events(self.id, last_event_id=last_event_id, timeout=timeout)

    def refresh(self) -> Sweep:
        return self.client.sweep(self.id)

    def cancel(self) -> Sweep:
        return self.client.cancel_sweep(self.id)

    def best_job(self) -> Job | None:
        """The best trial retrained on train+validation data, once there is one."""
        if self.best is None or self.best.job_id is None:
            return None
        return self.client.job(self.best.job_id)

    def to_dataframe(self) -> pd.DataFrame:
        """The trials, one row each, indexed by trial: each swept parameter and each metric
        (fold means) a column of its own, then status, score and vectorized."""
        rows = []
        for t in self.trials:
            row: dict[str, Any] = {"index": t.index, **t.params, **(t.metrics or {})}
            row.update(status=t.status, score=t.score, vectorized=t.vectorized)
            rows.append(row)
        return dataframe(rows, "index")

    def wait(
        self,
        progress: bool | Callable[[Sweep], None] = False,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        out: TextIO | None = None,
    ) -> Sweep:
        """Poll until the sweep finishes. progress=True: a tqdm.auto bar of finished trials
        where tqdm is installed, else a line whenever a trial ends; a callable gets the sweep."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = SweepProgress(out or sys.stderr) if progress is True else None
        sweep = self
        try:
            last = -1
            while True:
                done = sum(t.status in FINISHED for t in sweep.trials)
                if done != last:
                    last = done
                    if callable(progress):
                        progress(sweep)
                    elif shown is not None:
                        shown.update(sweep)
                if sweep.finished:
                    return sweep
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"sweep {self.id} still {sweep.status} after {timeout} s")
                time.sleep(poll)
                sweep = sweep.refresh()
        finally:
            if shown is not None:
                shown.close()
