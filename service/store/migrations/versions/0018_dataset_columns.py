"""A CSV's or Parquet dataset's column summary (service.data.columns: name, inferred type,
missing, distinct, vocab), read at submit to size the encoded features and shown by
GET /v1/datasets/{id}. Null for datasets uploaded before, and for NPZ files.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("columns", Json))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("columns")
