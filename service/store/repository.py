"""The store's one handle: jobs, sweeps and datasets, each a repository of its own over the shared
base (service/store/base.py) and lease lifecycle (service/store/leased.py). Callers hold a
Repository; the names below are the store's public ones."""

from __future__ import annotations

import sqlalchemy as sa

from service.store import migrate
from service.store.base import DeleteOutcome, Listener, new_id, now
from service.store.datasets import DatasetStore
from service.store.engine import DEFAULT_POOL_SIZE, make_engine
from service.store.jobs import Claim, JobStore
from service.store.leased import FINISHED, CancelOutcome, Row
from service.store.sweeps import TRIAL_FINISHED, SweepClaim, SweepStore
from service.store.tables import jobs, sweeps

__all__ = [
    "FINISHED",
    "TRIAL_FINISHED",
    "CancelOutcome",
    "Claim",
    "DeleteOutcome",
    "Listener",
    "Repository",
    "Row",
    "SweepClaim",
    "new_id",
    "now",
    "open_store",
]


class Repository(JobStore, SweepStore, DatasetStore):
    """Every query regtrain makes, by domain; one engine and one set of listeners for all."""

    def active_work(self, tenant: str) -> int:
        """How many of the tenant's jobs and sweeps are queued or running (what its cap
        counts), in one statement: a submit's round trips are most of its cost under load."""
        active = ("queued", "running")

        def count(table: sa.Table) -> sa.ScalarSelect[int]:
            query = sa.select(sa.func.count()).where(table.c.tenant == tenant, table.c.status.in_(active))
            return query.scalar_subquery()

        with self._read() as conn:
            return int(conn.execute(sa.select(count(jobs) + count(sweeps))).scalar() or 0)


def open_store(url: str, *, migrate_schema: bool = True, pool_size: int = DEFAULT_POOL_SIZE) -> Repository:
    engine = make_engine(url, pool_size)
    if migrate_schema:
        migrate.upgrade(engine)
    return Repository(engine)
