"""The fleet in the store: one row per worker process, kept by the worker's presence thread
(GET /v1/workers, the dashboard's workers page, the per-worker series of /metrics).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Written out here rather than imported from tables.py (see 0001).
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("celery_name", sa.String(300)),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("queues", Json, nullable=False),
        sa.Column("device", sa.String(200)),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(), nullable=False),
        sa.Column("busy_with", sa.String(80)),
        sa.Column("epochs_per_second", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )


def downgrade() -> None:
    op.drop_table("workers")
