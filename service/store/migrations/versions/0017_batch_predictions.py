"""A job's batch predictions: a dataset scored by a worker under a lease, its file kept with
the job's artifacts (store/batch_predictions.py).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Written out here rather than imported from tables.py (see 0001).
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "batch_predictions",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
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
        sa.Column("egress_private", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rows", sa.Integer),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("error", Json),
        sa.PrimaryKeyConstraint("seq", name="pk_batch_predictions"),
        sa.UniqueConstraint("id", name="uq_batch_predictions_id"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_batch_predictions_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_batch_predictions_job_id", "batch_predictions", ["job_id"])
    op.create_index("ix_batch_predictions_status_lease", "batch_predictions", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_predictions_status_lease", table_name="batch_predictions")
    op.drop_index("ix_batch_predictions_job_id", table_name="batch_predictions")
    op.drop_table("batch_predictions")
