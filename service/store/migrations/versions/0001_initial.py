"""Jobs, their history, metrics rows, checkpoints and uploaded datasets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out here rather than imported from tables.py: a migration must keep building the
# schema of its own revision after tables.py moves on.
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("spec", Json, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("progress_epoch", sa.Integer),
        sa.Column("latest_metrics", Json),
        sa.Column("result", Json),
        sa.Column("error", Json),
        sa.PrimaryKeyConstraint("seq", name="pk_jobs"),
        sa.UniqueConstraint("id", name="uq_jobs_id"),
    )
    op.create_index("ix_jobs_tenant_status_seq", "jobs", ["tenant", "status", "seq"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])
    op.create_table(
        "job_history",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("attempt", sa.Integer),
        sa.Column("worker", sa.String(200)),
        sa.Column("resumed_from_epoch", sa.Integer),
        sa.Column("message", sa.Text),
        sa.PrimaryKeyConstraint("seq", name="pk_job_history"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_history_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_history_job_id", "job_history", ["job_id"])
    op.create_table(
        "job_metrics",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("row", Json, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "epoch", name="pk_job_metrics"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_metrics_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "checkpoints",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metrics", Json),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_checkpoints"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_checkpoints_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "datasets",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("n_features", sa.Integer, nullable=False),
        sa.Column("n_classes", sa.Integer),
        sa.Column("image_shape", Json),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_datasets"),
        sa.UniqueConstraint("id", name="uq_datasets_id"),
    )
    op.create_index("ix_datasets_tenant", "datasets", ["tenant"])


def downgrade() -> None:
    for table in ("datasets", "checkpoints", "job_metrics", "job_history", "jobs"):
        op.drop_table(table)
