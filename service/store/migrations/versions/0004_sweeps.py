"""Sweeps and their trials: a sweep is leased, reaped and cancelled like a job.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Written out here rather than imported from tables.py (see 0001).
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweeps",
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
        sa.Column("enqueued_at", sa.DateTime()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("error", Json),
        sa.Column("best_index", sa.Integer),
        sa.Column("best_job_id", sa.String(64)),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_sha256", sa.String(64)),
        sa.PrimaryKeyConstraint("seq", name="pk_sweeps"),
        sa.UniqueConstraint("id", name="uq_sweeps_id"),
    )
    op.create_index("ix_sweeps_tenant_status_seq", "sweeps", ["tenant", "status", "seq"])
    op.create_index("ix_sweeps_status_lease", "sweeps", ["status", "lease_expires_at"])
    op.create_index("uq_sweeps_tenant_idempotency_key", "sweeps", ["tenant", "idempotency_key"], unique=True)
    op.create_table(
        "sweep_trials",
        sa.Column("sweep_id", sa.String(64), nullable=False),
        sa.Column("trial_index", sa.Integer, nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("metrics", Json),
        sa.Column("score", sa.Float),
        sa.Column("fold_scores", Json),
        sa.Column("best_epoch", sa.Float),
        sa.Column("vectorized", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("error", Json),
        sa.Column("finished_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("sweep_id", "trial_index", name="pk_sweep_trials"),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_sweep_trials_sweep_id_sweeps", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("sweep_trials")
    op.drop_table("sweeps")
