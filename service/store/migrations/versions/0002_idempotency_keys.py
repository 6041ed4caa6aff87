"""Idempotency keys: a retried POST /v1/jobs with the same key returns the same job.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: existing jobs simply have no key, so the upgrade keeps every row.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200)))
        batch.add_column(sa.Column("request_sha256", sa.String(64)))
    op.create_index("uq_jobs_tenant_idempotency_key", "jobs", ["tenant", "idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_jobs_tenant_idempotency_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_sha256")
        batch.drop_column("idempotency_key")
