"""The store: the one source of truth on jobs, their history, metrics, checkpoints and datasets.

SQLAlchemy 2 on a SQLite file (the embedded default) or PostgreSQL. `tables` holds the schema,
`migrate` applies the Alembic migrations, `repository` holds every query (`leased`, those of the
lifecycle jobs and sweeps share: claim, heartbeat, finish, release, reap, cancel).
"""

from service.store.repository import Repository, open_store

__all__ = ["Repository", "open_store"]
