"""A sweep's work in leased units that any worker takes, and each trial's curve.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Written out here rather than imported from tables.py (see 0001).
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweep_units",
        sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("id", sa.String(80), nullable=False),
        sa.Column("sweep_id", sa.String(64), nullable=False),
        sa.Column("unit_index", sa.Integer, nullable=False),
        sa.Column("trials", Json, nullable=False),
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
        sa.Column("worker", sa.String(200)),
        sa.Column("error", Json),
        sa.PrimaryKeyConstraint("seq", name="pk_sweep_units"),
        sa.UniqueConstraint("id", name="uq_sweep_units_id"),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_sweep_units_sweep_id_sweeps", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_sweep_units_sweep_id", "sweep_units", ["sweep_id"])
    op.create_index("ix_sweep_units_status_lease", "sweep_units", ["status", "lease_expires_at"])
    with op.batch_alter_table("sweep_trials") as batch:
        batch.add_column(sa.Column("curve", Json))


def downgrade() -> None:
    with op.batch_alter_table("sweep_trials") as batch:
        batch.drop_column("curve")
    op.drop_index("ix_sweep_units_status_lease", table_name="sweep_units")
    op.drop_index("ix_sweep_units_sweep_id", table_name="sweep_units")
    op.drop_table("sweep_units")
