"""Sweeps that search and prune: what each trial trained, why it was pruned, and where.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sweep_trials") as batch:
        batch.add_column(sa.Column("epochs_trained", sa.Integer))
        batch.add_column(sa.Column("pruned_at_epoch", sa.Integer))
        batch.add_column(sa.Column("reason", sa.Text))
        batch.add_column(sa.Column("worker", sa.String(200)))
        batch.add_column(sa.Column("unit", sa.Integer))
        batch.add_column(sa.Column("started_at", sa.DateTime()))
        batch.add_column(sa.Column("progress", Json))
        batch.add_column(sa.Column("updated_at", sa.DateTime()))
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("warnings", Json))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("warnings")
    with op.batch_alter_table("sweep_trials") as batch:
        for name in (
            "updated_at",
            "progress",
            "started_at",
            "unit",
            "worker",
            "reason",
            "pruned_at_epoch",
            "epochs_trained",
        ):
            batch.drop_column(name)
