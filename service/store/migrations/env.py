"""Alembic environment: runs on the connection that service.store.migrate hands over."""

from __future__ import annotations

from alembic import context

from service.store.migrate import VERSION_TABLE
from service.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
