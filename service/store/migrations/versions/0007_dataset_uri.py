"""Datasets registered by reference: the URI their canonical file was read from, and the sha256 of the object read.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("uri", sa.Text))
        batch.add_column(sa.Column("source_sha256", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("source_sha256")
        batch.drop_column("uri")
