"""The egress rule recorded with the work it admitted: may a job's webhooks and dataset by URI
reach loopback, private or link-local addresses? Decided by the API at admission (a job, a
sweep, whose retrain job inherits it) and obeyed by every process that acts for the job (the
worker's fetch, the webhook sender), whatever that process's own settings; each webhook
delivery carries its job's. Rows from before: false, the safe side.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("jobs", "sweeps", "webhook_deliveries")


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite allows one NOT NULL with a constant default), not batch mode:
    # for a NOT NULL column that copies the table on SQLite, and dropping the old `jobs` runs
    # its ON DELETE CASCADE, taking every job's metrics, history and checkpoints with it.
    for table in TABLES:
        op.add_column(
            table, sa.Column("egress_private", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    for table in TABLES:  # DROP COLUMN in place (SQLite 3.35+), for the same reason
        op.drop_column(table, "egress_private")
