"""What the API answers (read schemas). What it accepts is service.contract.spec.JobSpec."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# The title of each document's filled `spec` (a free-form object). A client generator names an
# inline object <Model><Title>: with pydantic's own title ("Spec"), openapi-python-client made
# JobSpec and SweepSpec of them, the request models' names, and dropped Job, JobList, Sweep and
# SweepList as duplicates (tests/integration/test_generated_client.py).
FILLED_SPEC = "FilledSpec"


class HistoryEntry(BaseModel):
    status: JobStatus
    at: datetime
    attempt: int | None = None
    worker: str | None = None
    resumed_from_epoch: int | None = Field(
        None, description="On a running entry: the epoch checkpoint this attempt resumed from."
    )
    message: str | None = None


class Progress(BaseModel):
    epoch: int = Field(description="Epochs completed.")
    epochs: int = Field(description="Epochs asked for (early stopping may end sooner).")
    fraction: float


class JobError(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="diverged, out_of_memory, time_limit, bad_data, worker_lost, internal, ...")
    message: str


class Job(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    history: list[HistoryEntry]
    progress: Progress
    latest_metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    error: JobError | None
    spec: dict[str, Any] = Field(title=FILLED_SPEC, description="The JobSpec with every default filled in.")


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


class Metrics(BaseModel):
    epochs: list[dict[str, Any]] = Field(description="One row per epoch, in order.")


class Checkpoint(BaseModel):
    name: str = Field(description='"epoch-K", "best" or "final".')
    epoch: int
    size_bytes: int
    sha256: str
    metrics: dict[str, Any] | None


class CheckpointList(BaseModel):
    checkpoints: list[Checkpoint]


class Validation(BaseModel):
    """The shape-driven figures are null for a dataset by URI: the worker reads its shape."""

    spec: dict[str, Any] = Field(title=FILLED_SPEC, description="The JobSpec with every default filled in.")
    parameters: int | None = Field(description="Trainable parameters of the model on this dataset.")
    memory_bytes_per_batch: int | None = Field(
        description="Rough float32 footprint of one training step (weights, gradients, "
        "optimizer state, activations)."
    )
    task: Literal["classification", "regression"] | None
    n_features: int | None
    n_outputs: int | None
    queue: str = Field(description="The queue the job would go to.")


class DatasetColumn(BaseModel):
    name: str
    type: Literal["numeric", "categorical", "text", "drop"] = Field(
        description='Inferred: "text" (many distinct strings) and "drop" (every value missing) are '
        "left out of the features unless declared otherwise."
    )
    missing: int = Field(description="Rows without a value (empty, NA, NaN, null).")
    distinct: int = Field(
        description="Distinct present values (a number column with more than 256: counted in an "
        "even sample of 20,000 rows, a lower bound)."
    )
    categories: list[Any] = Field(description="A categorical column's most frequent values (at most 50).")


class DatasetTarget(BaseModel):
    name: str
    distribution: dict[str, Any] = Field(
        description="Classification: rows per class label; regression: mean, std, min and max."
    )


class Dataset(BaseModel):
    id: str | None = Field(description='Pass as {"dataset": {"id": ...}}; null for a built-in.')
    name: str
    task: Literal["classification", "regression"]
    n_samples: int | None
    n_features: int
    n_classes: int | None
    image_shape: list[int] | None = None
    sha256: str | None
    builtin: bool = False
    created_at: datetime | None = None
    uri: str | None = Field(None, description="Where a dataset registered by reference was read from.")
    source_sha256: str | None = Field(None, description="The sha256 of the object read from `uri`.")
    columns: list[DatasetColumn] | None = Field(
        None,
        description="A CSV's or Parquet file's feature columns as inferred (a job's "
        "`dataset.columns` may declare otherwise); null for NPZ and built-in datasets.",
    )
    target: DatasetTarget | None = Field(None, description="The target column (CSV, Parquet).")


class DatasetList(BaseModel):
    datasets: list[Dataset]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class SweepTrial(BaseModel):
    index: int
    params: dict[str, Any] = Field(description="The field paths this trial sets, and their values.")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "pruned"]
    metrics: dict[str, float | None] | None = Field(
        description="Fold means of the metrics row of the weights the trial keeps, plus the "
        "objective's standard deviation over folds (`<metric>_std`)."
    )
    score: float | None = Field(description="The objective metric's mean over the folds.")
    fold_scores: list[float] | None
    vectorized: bool = Field(description="Trained as part of a stacked model with other trials.")
    error: JobError | None
    epochs_trained: int | None = Field(
        None, description="Epochs actually trained, summed over folds and seeds."
    )
    pruned_at_epoch: int | None = Field(
        None, description="Pruned: the epoch (counted across folds: fold k's epoch e is k·epochs + e)."
    )
    reason: str | None = Field(None, description="Why the pruner stopped it.")
    progress: dict[str, Any] | None = Field(
        None, description='Its latest epoch: {"fold", "epoch", "step", <objective metric>}.'
    )
    curve: list[tuple[int, float | None]] = Field(
        default_factory=list,
        description="The objective after every step, [[step, value], ...] (a pruned trial's up "
        "to where it stopped): the sweep page draws it.",
    )
    unit: int | None = None
    worker: str | None = Field(None, description="The worker that trained it (or trains it now).")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class SweepUnit(BaseModel):
    """A batch of trials trained together on one worker, leased like a job: any worker on the
    sweep's queue takes it, and a unit whose worker died goes to another."""

    index: int
    status: str
    worker: str | None = Field(description="The worker that ran it (or runs it now).")
    attempts: int = Field(0, description="Workers that took it: 2 or more after a lost worker.")
    trials: list[int]
    folds: list[int] | None = Field(
        None,
        description="The cv folds it trains (null: every fold). A CV sweep with fewer trials "
        "than live workers splits each trial's folds over units; the trial ends once all have.",
    )


class SweepStudy(BaseModel):
    name: str
    storage: str = Field(
        description="optuna.load_study(study_name=name, storage=<this URL, with its password>): "
        "the database's URL with its password removed, wherever it sat (userinfo or query)."
    )


class SweepBest(BaseModel):
    index: int
    params: dict[str, Any]
    metrics: dict[str, float | None] | None = Field(description="The trial's cross-validation metrics.")
    score: float | None
    job_id: str | None = Field(
        description="The job retraining this trial on train + validation data and testing it; "
        "its test metrics appear on that job."
    )
    score_std: float | None = Field(
        None, description="The objective's standard deviation over folds and seeds."
    )
    job_status: JobStatus | None = None
    test_metrics: dict[str, float | None] | None = Field(
        None, description="The retrained job's test metrics (once it has finished)."
    )


class SweepStop(BaseModel):
    """Which budget ended a sweep's search: no trial started after `at`; the running ones
    stopped at their next epoch (time_s, trial_epochs: `pruned`) or finished (max_trials,
    max_failed_trials), and the ones not started ended `cancelled`, each with a `reason`."""

    budget: Literal["max_trials", "max_failed_trials", "time_s", "trial_epochs"]
    at: datetime = Field(description="When the coordinator found it reached.")
    detail: str = Field(description='How, e.g. "3.1 s since the sweep started, of a time_s budget of 3 s".')


class Sweep(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    trials: list[SweepTrial]
    leaderboard: list[int] = Field(description="Indices of the scored trials, best first.")
    best: SweepBest | None
    best_known_at: datetime | None = Field(
        None,
        description="When the best trial's score was first known (its finished_at; while the "
        "sweep runs, the leader's): the time to the winner, beside the sweep's finished_at.",
    )
    objective: dict[str, Any]
    objectives: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every objective; `objective` is the first, which ranks the leaderboard.",
    )
    pareto: list[int] | None = Field(
        None, description="Several objectives: the indexes of the trials on the Pareto front."
    )
    units: list[SweepUnit] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    stopped_by: SweepStop | None = Field(
        None,
        description="The budget (spec.budget) that ended the search, when one did; null when "
        "the search ran to its end.",
    )
    param_importances: dict[str, float] | None = Field(
        None,
        description="Which swept fields mattered to the objective, {field: importance} summing "
        "to 1, most important first: Optuna's get_param_importances (fANOVA) over the succeeded "
        "trials (at most 256), computed by the worker when the search ends; null before, or "
        "when fewer than two trials scored or no field varied.",
    )
    study: SweepStudy | None = Field(None, description="A search's Optuna study, in regtrain's database.")
    spec: dict[str, Any] = Field(title=FILLED_SPEC, description="The SweepSpec with every default filled in.")
    error: JobError | None


class SweepValidation(BaseModel):
    """What POST /v1/sweeps would queue, checked as it would be; nothing is queued."""

    spec: dict[str, Any] = Field(
        title=FILLED_SPEC,
        description="The SweepSpec as it would run, every default filled in (a grid sampler's "
        "trials clamped to its combinations).",
    )
    trials: int = Field(
        description="Trials it would train (a space: the sampler's trials), at most its budget's max_trials."
    )
    trainings: int = Field(description="Trials × folds × seeds: the trainings it counts against the cap.")
    parameters: int = Field(description="Trainable parameters of its largest trial.")
    memory_bytes: int = Field(
        description="Worker memory its largest trial needs (data, model and optimizer state, one "
        "batch); for a space, its worst case: the size fields at their largest values together."
    )
    task: Literal["classification", "regression"]
    n_features: int
    n_outputs: int
    queue: str = Field(description="The queue the sweep would go to.")
    warnings: list[str] = Field(description="How it would run unlike what was asked.")


class SweepList(BaseModel):
    sweeps: list[Sweep]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


class Worker(BaseModel):
    """A worker process, as its heartbeats in the store describe it."""

    name: str = Field(description="The worker as job histories and sweep trials name it (host:pid).")
    celery_name: str | None = Field(
        None, description="The same process as Celery names it (`celery inspect`, Flower)."
    )
    host: str
    queues: list[str] = Field(description="The queues it takes messages from.")
    device: str | None = Field(description='What it trains an "auto" job on: `cpu` or `cuda:N (name)`.')
    busy: bool = Field(
        description="It trains something now (it holds a job's, sweep's or sweep unit's lease)."
    )
    busy_with: str | None = Field(
        description="The id of the job, sweep or sweep unit (`{sweep id}.{index}`) it trains, when "
        "that belongs to the caller's tenant; null when idle or busy with another tenant's work."
    )
    busy_kind: Literal["job", "sweep", "unit"] | None = Field(
        description="What `busy_with` names: a job, a sweep (its coordinator) or a sweep's unit."
    )
    epochs_per_second: float = Field(
        description="Epochs it trained per second over the last minute (each trial's epoch in a sweep)."
    )
    started_at: datetime
    last_heartbeat: datetime
    version: str = Field(description="The regtrain version it runs.")


class WorkerList(BaseModel):
    workers: list[Worker]


class LogLine(BaseModel):
    """A line the worker logged for a job."""

    at: datetime = Field(description="When it was logged, on the worker's clock.")
    attempt: int = Field(description="The attempt that logged it (1, then 2 after a lost worker, ...).")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    message: str = Field(description="The message, with its traceback where it came with one.")
    cursor: str = Field(description="Pass as ?cursor= for the lines written after this one.")


class JobLogs(BaseModel):
    lines: list[LogLine]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the lines written after these (null: none read yet)."
    )
