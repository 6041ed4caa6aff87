"""A sweep's units over trials × folds (worker/coordinator.py): `sweep_units.folds`, the cv folds a
unit trains (null: every fold), and `sweep_trials.parts`, each fold-unit's outcome of a trial
({unit index: outcome}) until its last one lands and the trial's own outcome is summarized from
them (store/sweep_units.py record_part).

Plain ADD COLUMN (nullable, no default): on SQLite that is one ALTER, no table copy.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("sweep_units", sa.Column("folds", Json))
    op.add_column("sweep_trials", sa.Column("parts", Json))


def downgrade() -> None:
    with op.batch_alter_table("sweep_trials") as batch:
        batch.drop_column("parts")
    with op.batch_alter_table("sweep_units") as batch:
        batch.drop_column("folds")
