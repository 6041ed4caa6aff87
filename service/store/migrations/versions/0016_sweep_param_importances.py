"""A finished sweep's parameter importances, {field: importance} (Optuna's fANOVA over its
trials), written once by its worker when the search ends (worker/importance.py).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("param_importances", Json))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("param_importances")
