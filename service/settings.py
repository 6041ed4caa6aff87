"""Every setting of regtrain, read from REGTRAIN_* environment variables (one class, one prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGTRAIN_", extra="ignore")

    data_dir: Path = Field(
        Path.home() / ".regtrain",
        description="Where the SQLite database, the embedded broker's queue, uploaded datasets "
        "and checkpoints live. Share it between the API and the workers, unless "
        "REGTRAIN_ARTIFACTS_URL names a bucket: then it is each process's own scratch and cache.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store, e.g. postgresql+psycopg://user@host/db. "
        "Default: a SQLite file in data_dir.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker, e.g. redis://host:6379/0. Default: a queue in data_dir that "
        "needs no server (one machine only).",
    )
    celery_events: bool | None = Field(
        None,
        description="Celery's remote control and task events, which `celery inspect` and Flower "
        "read: each worker answers broadcasts and sends an event per task state change and a "
        "heartbeat every 2 s. Unset: on with REGTRAIN_BROKER_URL (Redis); false turns them off. "
        "Always off on the embedded broker, which cannot carry them (its control queues are "
        "files, and a killed worker's would fill with every later broadcast).",
    )
    api_keys: str | None = Field(
        None,
        description='"tenant-a:key1,tenant-b:key2". Unset: no auth, and the API serves loopback only.',
    )
    max_parameters: int = Field(50_000_000, ge=1, description="Largest model a job may ask for.")
    max_time_limit_s: float = Field(
        24 * 3600.0, gt=0, description="Cap on training.time_limit_s, and the limit of jobs with none."
    )
    lease_seconds: float = Field(
        60.0, gt=0, description="A running job whose worker is silent this long is run again."
    )
    max_attempts: int = Field(3, ge=1, description="Attempts before a job fails worker_lost.")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1, description="Largest dataset upload.")
    max_dataset_rows: int = Field(1_000_000, ge=1, description="Most rows in an uploaded dataset.")
    max_dataset_columns: int = Field(10_000, ge=1, description="Most feature columns in an upload.")
    max_request_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Largest request body other than a dataset upload (a JobSpec is a few kB); "
        "a larger one answers 413.",
    )
    max_worker_memory_bytes: int = Field(
        8 * 2**30,
        ge=1,
        description="Cap on the worker memory a job may need, estimated before it is queued (its "
        "data, model and optimizer state, and one batch's activations); a spec over it answers "
        "422 naming the field that drives the estimate (dataset, model or training.batch_size).",
    )
    disabled_model_plugins: str = Field(
        "",
        description="Model plugins (regtrain.models entry-point names, comma-separated) this process "
        "does not load, though installed: a worker so set leaves jobs of those types queued for a "
        "worker that has them; the API so set refuses them (422 at model.type). Read at the first "
        "use of the model registry (service.contract.model_plugins).",
    )
    max_sweep_trainings: int = Field(
        2560,
        ge=1,
        description="Cap on a sweep's trainings (trials × folds), counted from the grid's lengths "
        "before any trial is built; a sweep over it answers 422 naming the search.",
    )
    max_epoch_samples: int = Field(
        1_000_000_000,
        ge=1,
        description="Cap on training.epochs × the dataset's samples (the work one job may ask "
        "for); a spec over it answers 422 naming training.epochs.",
    )
    max_active_jobs: int = Field(
        100,
        ge=1,
        description="Most queued + running jobs per tenant; one more answers 429 with Retry-After.",
    )
    heartbeat_seconds: float = Field(
        2.0,
        gt=0,
        description="How often a worker renews its job's lease and reads the cancel flag (so a "
        "cancel takes effect within about this long), and writes its row of GET /v1/workers. "
        "Keep it well under lease_seconds.",
    )
    reaper_interval_s: float = Field(
        15.0, gt=0, description="How often each worker looks for running jobs whose lease expired."
    )
    resend_after_s: float = Field(
        1800.0,
        gt=0,
        description="A job queued this long without a worker taking it gets its message sent "
        "again, in case the broker lost it (a duplicate is harmless: the store decides).",
    )
    lost_message_after_s: float = Field(
        30.0,
        gt=0,
        description="A job, sweep or sweep unit queued this long while its queue in the broker holds "
        "fewer messages than the store has such rows (the broker lost some: a restart, a failed send) "
        "is sent again at the next reaper pass, without waiting for resend_after_s.",
    )
    queue_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Prefix of the queue names (`cpu`, `gpu`) and of the broker's Redis keys, so "
        "that several regtrain installations can share one Redis.",
    )
    auto_device_queue: Literal["cpu", "gpu"] = Field(
        "cpu",
        description='The queue of jobs whose training.device is "auto" (cuda jobs go to `gpu`, cpu '
        "jobs to `cpu`). Set it to gpu on a fleet whose GPU workers should take them.",
    )
    webhook_secrets: str | None = Field(
        None,
        description='"tenant-a:whsec_…,tenant-b:whsec_…": the Standard Webhooks secret that signs '
        "each tenant's webhooks (a job's notify.secret takes its place); no tenant learns another's.",
    )
    webhook_secret: str | None = Field(
        None,
        description="The secret of tenant `default` (a server without REGTRAIN_API_KEYS), kept for "
        "older installs; with keys, give each tenant its own in REGTRAIN_WEBHOOK_SECRETS.",
    )
    webhook_history_s: float = Field(
        7 * 86400,
        gt=0,
        description="How long a delivered or failed webhook delivery stays in the store (seconds); "
        "every worker's reaper deletes older ones, so the outbox does not grow with the store's history.",
    )
    egress_private_targets: bool | None = Field(
        None,
        description="May the fleet call loopback, private or link-local addresses for a tenant "
        "(webhooks, datasets by https:// URI)? Decided by the API where a job, sweep or dataset "
        "is admitted, and recorded with it: every process that acts for a job (workers, webhook "
        "senders) obeys the rule recorded with the job, whatever its own keys. Unset: false "
        "whenever REGTRAIN_API_KEYS is set; true on a server without keys (one user, as "
        "`regtrain up`: loopback targets for local development).",
    )
    webhook_private_targets: bool | None = Field(
        None,
        description="Deprecated alias of REGTRAIN_EGRESS_PRIVATE_TARGETS, read only where that "
        "is unset (it was named for webhooks, but always covered datasets by URI too).",
    )
    data_sources: str | None = Field(
        None,
        pattern=r"^\s*$|^\s*[^\s:,]+:s3://[^\s,/]+(/[^\s,]*)?\s*(,\s*[^\s:,]+:s3://[^\s,/]+(/[^\s,]*)?\s*)*$",
        description='"tenant-a:s3://bucket-a/prefix,*:s3://shared-public/": the buckets and '
        "prefixes each tenant may train on or register datasets from by s3:// URI (`*`: every "
        "tenant; a prefix matches whole path segments). Never the artifacts location "
        "(REGTRAIN_ARTIFACTS_URL), whatever a grant says. Checked by the API at admission and "
        "by the worker again before it reads (so set it on both). Empty: none. Unset: none, except for the "
        "tenant `default` of a server without REGTRAIN_API_KEYS (one user, whose own "
        "credentials the server holds), which may read any bucket but the artifacts location.",
    )
    max_dataset_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="Most bytes a dataset's arrays may take in memory once decompressed or "
        "parsed (an NPZ's X and y from their headers, before any array is read; a CSV's or "
        "Parquet file's rows × features × 4); also the most bytes read of a dataset given by URI.",
    )
    # A text column read by a text model: what the API plans a text job at and what a worker
    # fits. Bounded by what a kept tokenizer may hold (worker.training.text's MAX_SEQUENCE_LENGTH
    # and MAX_VOCAB_SIZE, the same on every server, so a checkpoint loads anywhere).
    text_max_tokens: int = Field(
        128,
        ge=1,
        le=512,
        description="Tokens a text row keeps (a longer text is cut): a text model's input is N×T with "
        "T this, or the longest train row when shorter. The API plans a text job at it (a "
        "transformer whose max_length is below it answers 422 naming model.max_length) and a "
        "worker fits at it; set it alike on both. At most 512.",
    )
    text_max_vocabulary: int = Field(
        20_000,
        ge=1,
        le=50_000,
        description="Words a text column's vocabulary keeps (the train split's most frequent, [PAD] "
        "and [UNK] besides): the rows of a text model's embedding table, counted at submit "
        "against REGTRAIN_MAX_PARAMETERS and REGTRAIN_MAX_WORKER_MEMORY_BYTES (a 422 naming "
        "the model), and what a worker fits; set it alike on both. At most 50,000.",
    )
    text_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Bytes of raw strings a dataset keeps for its text columns, all of them together "
        "(an upload's, and a worker's parse of a dataset by URI): a column that would cross it "
        "is kept as categories only, and a text model on it answers 422 naming "
        "dataset.columns (at submit, for an upload) or fails bad_data.",
    )
    remote_head_deadline_s: float = Field(
        10.0,
        gt=0,
        description="The whole of the API's check of a dataset's URI at submit or validation (DNS "
        "lookup, connect, the HEAD's answer): an origin that has not answered by then fails the "
        "request with 422 naming dataset.uri.",
    )
    remote_fetch_deadline_s: float = Field(
        120.0,
        gt=0,
        description="The whole of a fetch of a dataset's URI (the API registering it, a worker "
        "reading it: lookup, connect, headers and every byte): an origin that trickles fails it "
        "at this deadline (400 at registration; the job failed bad_data). A worker's fetch also "
        "ends at the job's time_limit_s and within a heartbeat of a cancel.",
    )
    remote_requests_per_tenant: int = Field(
        4,
        ge=1,
        description="Most exchanges with datasets' origins (URI checks, registrations) that one "
        "tenant's requests may have open at once in an API process; one more answers 429 with "
        "Retry-After. They wait on the API's event loop, never on its request threads.",
    )
    artifacts_url: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\\]*)?$",
        description="s3://bucket/prefix: checkpoints, resume state, exports and uploaded datasets "
        "go to this bucket (endpoint, region and credentials from AWS_ENDPOINT_URL, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), and no process needs a shared "
        "file system. Default: the data dir.",
    )
    artifacts_presign: bool = Field(
        False,
        description="Checkpoint downloads answer 307 to a presigned URL of the bucket (valid 15 "
        "minutes) instead of streaming through the API. Only with REGTRAIN_ARTIFACTS_URL.",
    )
    cache_max_bytes: int = Field(
        4 * 1024**3,
        ge=0,
        description="Most bytes of cached copies each process keeps in data_dir/cache: "
        "checkpoints and exports the API fetched from the bucket, the uploads a worker trained "
        "on from the bucket, datasets fetched by URI. Over "
        "it, the least recently used copies not in use are removed (fetched again when needed).",
    )
    db_pool_size: int = Field(
        20,
        ge=1,
        le=1000,
        description="Connections each process keeps open to the store. The API runs at most this "
        "many requests' blocking work at once (its thread pool), so a burst waits in the process "
        "instead of opening and closing connections; on a fleet, replicas × this (+ workers) must "
        "stay under PostgreSQL's max_connections.",
    )
    keep_epoch_checkpoints: int = Field(
        3,
        ge=0,
        description="A finished job keeps its best and final checkpoints and its last this many "
        "epoch checkpoints (resume points; a running job keeps 3); 0 keeps none.",
    )
    job_log_max_bytes: int = Field(
        256 * 1024,
        ge=4096,
        description="Most bytes of log lines the store keeps per job (GET /v1/jobs/{id}/logs), "
        "every attempt together. Past it, the first lines and the last ones (how the job ended, "
        "an error's traceback) stay, and one line says how many were dropped between them; a "
        "line is cut to 16 KiB (a quarter of this, if less), keeping its start and end.",
    )
    worker_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="CPU priority steps a worker runs below normal (nice(1), and its session's "
        "autogroup where Linux schedules by session). On a host an API shares with workers "
        "(regtrain up, one small machine): 19 keeps the API's latency while training takes "
        "whatever CPU the API leaves; 0: the same priority as the API.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="Threads a worker's torch computes with (torch.set_num_threads); 0: torch's "
        "default, every core. Several CPU workers on one host: cores / workers, so that they "
        "share the cores instead of fighting over them.",
    )
    worker_warmup: bool = Field(
        True,
        description="A worker trains a tiny stacked sweep and a tiny job on synthetic data before "
        "it says ready (torch imported, kernels and math libraries loaded: well under a second "
        "after the import), so the first sweep or job it takes starts at once. false: ready "
        "sooner, the first training pays for it.",
    )

    mlflow_tracking_uri: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="http(s)://host:port of an MLflow tracking server: every job becomes a run "
        "there (params, per-epoch metrics, result, tags regtrain.job_id and regtrain.tenant), a "
        "sweep a parent run with one nested run per trial. Sent from an outbox in the store by "
        "the API and every worker, so a tracker that is down never fails or delays a job; its "
        "runs appear once it is back. The operator's alone: a job chooses only the experiment and "
        "register_as names (tracking.mlflow). Unset: nothing is tracked.",
    )
    mlflow_experiment: str = Field(
        "regtrain",
        min_length=1,
        max_length=100,
        description="The experiment of runs whose job names none (tracking.mlflow.experiment); "
        "with REGTRAIN_API_KEYS, each tenant's is `{tenant}/{this}`.",
    )
    mlflow_history_s: float = Field(
        7 * 86400,
        gt=0,
        description="How long the outbox keeps a run's bookkeeping (its MLflow run id) after its "
        "job or sweep has ended and everything was sent (or given up on), in seconds.",
    )

    def tenant_webhook_secrets(self) -> dict[str, str]:
        """Tenant → its webhook secret, from webhook_secrets (and webhook_secret for `default`)."""
        out = {"default": self.webhook_secret} if self.webhook_secret else {}
        for entry in (self.webhook_secrets or "").split(","):
            tenant, sep, secret = entry.strip().partition(":")
            if sep and tenant.strip() and secret.strip():
                out[tenant.strip()] = secret.strip()
        return out

    @property
    def admits_private_targets(self) -> bool:
        """The egress rule this process records with the work it admits (a job, a sweep, a
        dataset registration): the API's. A worker or webhook sender never asks this: it obeys
        the rule recorded with the job it acts for (jobs.egress_private)."""
        for allowed in (self.egress_private_targets, self.webhook_private_targets):
            if allowed is not None:
                return allowed
        return not self.api_keys

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'regtrain.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
