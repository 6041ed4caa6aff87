"""MLflow's outbox: one row per tracked job, sweep and trial (its run id, what was sent, when to
send again), so that a tracker that is down never fails or delays a job.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_runs",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("parent", sa.String(64)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("sent_epoch", sa.Integer, nullable=False, server_default="0"),
        sa.Column("changes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("seq", name="pk_mlflow_runs"),
        sa.UniqueConstraint("subject", name="uq_mlflow_runs_subject"),
    )
    op.create_index("ix_mlflow_runs_status_next_at", "mlflow_runs", ["status", "next_at"])
    op.create_index("ix_mlflow_runs_parent", "mlflow_runs", ["parent"])


def downgrade() -> None:
    op.drop_table("mlflow_runs")
