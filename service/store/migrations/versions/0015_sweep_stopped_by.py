"""Which budget ended a sweep's search (SweepSpec.budget): {"budget", "at", "detail"}, written
once by its coordinator (contract/sweep_budget.py), read by the units' heartbeats.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("stopped_by", Json))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("stopped_by")
