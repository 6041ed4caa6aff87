"""What /metrics reads, kept as jobs finish: the duration histogram (job_durations), the
counters of epochs and of finished jobs by status (store_counters), and the indexes that count
the active jobs, the last minute's epochs and a tenant's newest jobs without reading the whole
history. Existing jobs and metrics rows are counted once, here.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The bounds of store/job_counts.py when this revision was written (a migration is frozen).
BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


def upgrade() -> None:
    durations = op.create_table(
        "job_durations",
        sa.Column("status", sa.String(20), primary_key=True),
        sa.Column("le", sa.Float, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    counters = op.create_table(
        "store_counters",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_job_metrics_at", "job_metrics", ["at"])
    op.create_index("ix_jobs_status_queue", "jobs", ["status", "queue"])
    op.create_index("ix_jobs_tenant_seq", "jobs", ["tenant", "seq"])

    conn = op.get_bind()
    jobs = sa.table(
        "jobs",
        sa.column("status", sa.String),
        sa.column("started_at", sa.DateTime),
        sa.column("finished_at", sa.DateTime),
    )
    if conn.dialect.name == "sqlite":
        seconds = (sa.func.julianday(jobs.c.finished_at) - sa.func.julianday(jobs.c.started_at)) * 86400.0
    else:
        seconds = sa.func.extract("epoch", jobs.c.finished_at - jobs.c.started_at)
    # Every finished job that started, grouped by status and bucket, in one pass over the jobs.
    le = sa.case(*((seconds <= b, float(b)) for b in BUCKETS), else_=-1.0).label("le")
    grouped = (
        sa.select(jobs.c.status, le, sa.func.count(), sa.func.coalesce(sa.func.sum(seconds), 0.0))
        .where(
            jobs.c.status.in_(("succeeded", "failed", "cancelled")),
            jobs.c.started_at.is_not(None),
            jobs.c.finished_at.is_not(None),
        )
        .group_by(jobs.c.status, le)
    )
    rows = [
        # -1 stands for "above every bound" in the CASE (a literal infinity is not portable SQL).
        {"status": s, "le": math.inf if b < 0 else b, "count": int(n), "seconds": max(float(t), 0.0)}
        for s, b, n, t in conn.execute(grouped)
    ]
    if rows:
        op.bulk_insert(durations, rows)
    metrics = sa.table("job_metrics", sa.column("job_id"))
    epochs = conn.execute(sa.select(sa.func.count()).select_from(metrics)).scalar() or 0
    finished = dict.fromkeys(("succeeded", "failed", "cancelled"), 0)
    by_status = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
    finished.update({s: int(n) for s, n in conn.execute(by_status) if s in finished})
    op.bulk_insert(
        counters,
        [{"name": "epochs", "value": int(epochs)}]
        + [{"name": f"jobs:{s}", "value": n} for s, n in finished.items()],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_seq", "jobs")
    op.drop_index("ix_jobs_status_queue", "jobs")
    op.drop_index("ix_job_metrics_at", "job_metrics")
    op.drop_table("store_counters")
    op.drop_table("job_durations")
