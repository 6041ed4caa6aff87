"""What the worker logged for each job (every attempt), kept with the job and bounded per job.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_logs",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("dropped", sa.Integer),
        sa.PrimaryKeyConstraint("seq", name="pk_job_logs"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"),
    )
    op.create_index("ix_job_logs_job_id_seq", "job_logs", ["job_id", "seq"])


def downgrade() -> None:
    op.drop_table("job_logs")
