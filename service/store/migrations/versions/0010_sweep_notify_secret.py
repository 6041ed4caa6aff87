"""Each sweep's own webhook secret (its base spec's notify.secret, write-only like the job's):
the job that retrains its best trial is signed with it, as the user asked.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("notify_secret", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("notify_secret")
