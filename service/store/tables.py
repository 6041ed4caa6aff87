"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` build exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on PostgreSQL (indexable, compact), TEXT-backed JSON on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, returned timezone-aware.

    SQLite has no time zones; storing naive UTC everywhere keeps comparisons (lease expiry) the
    same on both backends.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


# Jobs and sweeps are both leased rows (store/leased.py runs their lifecycle), so they share
# these column blocks. Each call makes new Column objects: a Column belongs to one table. The
# blocks keep each table's column order, which the migrations fixed.


def _identity() -> list[sa.Column[Any]]:
    return [
        # seq orders rows (newest first) and makes the pagination cursor; id is the public name.
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("spec", Json, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
    ]


def _lease() -> list[sa.Column[Any]]:
    return [
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    ]


def _idempotency() -> list[sa.Column[Any]]:
    # A retried POST with the same Idempotency-Key returns the same row.
    return [sa.Column("idempotency_key", sa.String(200)), sa.Column("request_sha256", sa.String(64))]


def _indexes(table: str) -> list[sa.Index]:
    return [
        sa.Index(f"ix_{table}_tenant_status_seq", "tenant", "status", "seq"),
        sa.Index(f"ix_{table}_status_lease", "status", "lease_expires_at"),
        sa.Index(f"uq_{table}_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
    ]


def _egress() -> list[sa.Column[Any]]:
    """Added by migration 0011: the egress rule that admitted the work (may its webhooks and
    datasets by URI reach loopback, private or link-local addresses?), decided by the API and
    obeyed by every process that acts for it; rows from before it: no, the safe side."""
    return [sa.Column("egress_private", sa.Boolean, nullable=False, server_default=sa.false())]


jobs = sa.Table(
    "jobs",
    metadata,
    *_identity(),
    *_lease(),
    sa.Column("progress_epoch", sa.Integer),
    sa.Column("latest_metrics", Json),
    sa.Column("result", Json),
    sa.Column("error", Json),
    *_idempotency(),  # added by migration 0002
    # Added by migration 0003: when the job's message was last sent (see Repository.reap).
    sa.Column("enqueued_at", UTCDateTime),
    *_indexes("jobs"),
    # Added by migration 0008: /metrics counts jobs by status and queue from this index alone;
    # a tenant's newest jobs (GET /v1/jobs) are a range of the second, however many others have.
    sa.Index("ix_jobs_status_queue", "status", "queue"),
    sa.Index("ix_jobs_tenant_seq", "tenant", "seq"),
    # Added by migration 0005: the job's own webhook secret (notify.secret), never served.
    sa.Column("notify_secret", sa.String(200)),
    *_egress(),
)

job_history = sa.Table(
    "job_history",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column(
        "job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("attempt", sa.Integer),
    sa.Column("worker", sa.String(200)),
    sa.Column("resumed_from_epoch", sa.Integer),
    sa.Column("message", sa.Text),
)

job_metrics = sa.Table(
    "job_metrics",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("row", Json, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    # Added by migration 0008: /metrics counts the last minute's epochs.
    sa.Index("ix_job_metrics_at", "at"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    # Relative to the job's work dir, so a data dir mounted elsewhere on another host still works.
    sa.Column("path", sa.String(500), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("metrics", Json),
    sa.Column("at", UTCDateTime, nullable=False),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(100), nullable=False, index=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("task", sa.String(20), nullable=False),
    sa.Column("n_samples", sa.Integer, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    sa.Column("n_classes", sa.Integer),
    sa.Column("image_shape", Json),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Added by migration 0007: where a dataset registered by reference was read from.
    sa.Column("uri", sa.Text),
    sa.Column("source_sha256", sa.String(64)),
    # Added by migration 0018: a CSV's or Parquet file's column summary (service.data.columns).
    sa.Column("columns", Json),
)

# Added by migration 0004: a sweep is leased, reaped and cancelled like a job.
sweeps = sa.Table(
    "sweeps",
    metadata,
    *_identity(),
    sa.Column("enqueued_at", UTCDateTime),
    *_lease(),
    sa.Column("error", Json),
    sa.Column("best_index", sa.Integer),
    sa.Column("best_job_id", sa.String(64)),
    *_idempotency(),
    sa.Column("warnings", Json),  # added by migration 0005, as the columns below
    # Added by migration 0010: the base spec's notify.secret, which signs the retrain job's
    # deliveries; never served (sweep documents pick their fields).
    sa.Column("notify_secret", sa.String(200)),
    *_egress(),
    # Added by migration 0015: the budget that ended its search, {"budget", "at", "detail"}
    # (contract/sweep_budget.py), written once by its coordinator; units read it as they beat.
    sa.Column("stopped_by", Json),
    # Added by migration 0016: {field: importance} of its trials (worker/importance.py), written
    # once by its worker when the search ends; null before, or when there was nothing to weigh.
    sa.Column("param_importances", Json),
    *_indexes("sweeps"),
)

sweep_trials = sa.Table(
    "sweep_trials",
    metadata,
    sa.Column("sweep_id", sa.String(64), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("trial_index", sa.Integer, primary_key=True),
    sa.Column("params", Json, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("metrics", Json),
    sa.Column("score", sa.Float),
    sa.Column("fold_scores", Json),
    # Mean over folds; the retrain of the best trial runs this many epochs when it early-stopped.
    sa.Column("best_epoch", sa.Float),
    sa.Column("vectorized", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("error", Json),
    sa.Column("finished_at", UTCDateTime),
    # Epochs actually trained, summed over folds and seeds (less than asked when pruned).
    sa.Column("epochs_trained", sa.Integer),
    sa.Column("pruned_at_epoch", sa.Integer),
    sa.Column("reason", sa.Text),  # why it was pruned
    sa.Column("worker", sa.String(200)),  # the worker that trained it
    sa.Column("unit", sa.Integer),  # the unit of work (a batch of trials trained together)
    sa.Column("started_at", UTCDateTime),
    sa.Column("progress", Json),  # while it trains: {"fold", "epoch", "step", "value"}
    sa.Column("updated_at", UTCDateTime),  # every write: the sweep's event stream reads past it
    # Added by migration 0008: the objective after every step ([[step, value], ...]), so the
    # sweep page draws each trial's curve, a pruned one's up to where it stopped.
    sa.Column("curve", Json),
    # Added by migration 0019: a trial split over fold-units keeps each one's outcome here
    # ({unit index: outcome}) until the last lands (store/sweep_units.py record_part).
    sa.Column("parts", Json),
)

# Added by migration 0008: a sweep's work in units (a batch of trials trained together), each
# leased like a job (store/leased.py), so that any worker on the sweep's queue trains one and a
# unit whose worker died is handed to another (store/sweep_units.py).
sweep_units = sa.Table(
    "sweep_units",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),  # "{sweep id}.{index}"
    sa.Column(
        "sweep_id", sa.String(64), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("unit_index", sa.Integer, nullable=False),
    sa.Column("trials", Json, nullable=False),  # the trial indexes it trains
    sa.Column("queue", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("enqueued_at", UTCDateTime),
    *_lease(),
    sa.Column("worker", sa.String(200)),  # the worker that last held it (it ran or runs it)
    sa.Column("error", Json),
    sa.Column("folds", Json),  # migration 0019: the cv folds it trains (null: every fold)
    sa.Index("ix_sweep_units_status_lease", "status", "lease_expires_at"),
)

# Added by migration 0017: a job's batch predictions (POST /v1/jobs/{id}/predictions), leased
# like jobs: a worker scores the dataset in `spec` with the job's checkpoint and puts the file
# under the job's artifacts (store/batch_predictions.py); deleted with their job.
batch_predictions = sa.Table(
    "batch_predictions",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("spec", Json, nullable=False),  # {"dataset", "checkpoint", "format"}
    sa.Column("queue", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("enqueued_at", UTCDateTime),
    *_lease(),
    sa.Column("egress_private", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rows", sa.Integer),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("error", Json),
    sa.Index("ix_batch_predictions_status_lease", "status", "lease_expires_at"),
)

# Added by migration 0013: what the worker logged for a job, every attempt's lines in the order
# they were written (seq), kept to REGTRAIN_JOB_LOG_MAX_BYTES per job (store/job_logs.py).
job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),  # what the line counts against the bound
    # Set on the one line that stands for the lines dropped to keep the bound: how many.
    sa.Column("dropped", sa.Integer),
    sa.Index("ix_job_logs_job_id_seq", "job_id", "seq"),
)

# Added by migration 0005: webhook deliveries, leased like jobs so that a delivery outlives the
# process that scheduled it (store/webhook_outbox.py).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),  # the webhook-id header
    sa.Column(
        "job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("secret", sa.String(200)),  # the job's notify.secret; else the tenant's at send time
    *_egress(),
    sa.Column("status", sa.String(20), nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_webhook_deliveries_status_next_at", "status", "next_at"),
)

# Added by migration 0008: what /metrics reads, kept as jobs finish and epochs are written, so a
# scrape costs the same with 100 jobs in the store or 100,000 (store/job_counts.py).
job_durations = sa.Table(
    "job_durations",
    metadata,
    sa.Column("status", sa.String(20), primary_key=True),
    # The bucket's upper bound in seconds (the smallest of job_counts.DURATION_BUCKETS at or
    # above the job's duration; infinity above the last).
    sa.Column("le", sa.Float, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
)

store_counters = sa.Table(
    "store_counters",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Added by migration 0012: the fleet as each worker process reports it, upserted by its presence
# thread every heartbeat and deleted on a clean shutdown (store/workers.py); a worker killed
# outright leaves a row that readers skip once its heartbeat is older than the lease.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # the lease owner in job histories
    sa.Column("celery_name", sa.String(300)),  # the same process as Celery names it (Flower)
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("queues", Json, nullable=False),
    sa.Column("device", sa.String(200)),
    sa.Column("version", sa.String(50), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_heartbeat", UTCDateTime, nullable=False),
    sa.Column("busy_with", sa.String(80)),  # the job, sweep or sweep unit it trains
    sa.Column("epochs_per_second", sa.Float, nullable=False, server_default="0"),
)

# Added by migration 0014: MLflow's outbox (store/mlflow_runs.py). One row per tracked job, sweep
# and sweep trial: the MLflow run it is, how far it was sent, and when to send again. A job's row
# is written in the transaction of its claim and touched in those of its epochs and its end; any
# process's sender (service/notify/mlflow.py) claims due rows with a lease, like webhooks.
mlflow_runs = sa.Table(
    "mlflow_runs",
    metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    # A job's or sweep's id, or "{sweep id}.{trial index}" for a trial
    sa.Column("subject", sa.String(80), nullable=False, unique=True),
    sa.Column("kind", sa.String(10), nullable=False),  # job, sweep, trial
    sa.Column("parent", sa.String(64)),  # a trial's sweep
    sa.Column("run_id", sa.String(64)),  # MLflow's, once created
    sa.Column("sent_epoch", sa.Integer, nullable=False, server_default="0"),  # metrics sent up to
    sa.Column("changes", sa.Integer, nullable=False, server_default="0"),  # bumped by each touch
    sa.Column("status", sa.String(10), nullable=False),  # pending, synced, ended, failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # failures in a row
    sa.Column("next_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_mlflow_runs_status_next_at", "status", "next_at"),
    sa.Index("ix_mlflow_runs_parent", "parent"),
)
