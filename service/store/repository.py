"""The store's one handle: jobs, sweeps and datasets, each a repository of its own over the shared
base (service/store/base.py) and lease lifecycle (service/store/leased.py). Callers hold a
Repository; the names below are the store's public ones."""

from __future__ import annotations

import sqlalchemy as sa

from service.store import migrate
from service.store.base import DeleteOutcome, Listener, new_id, now
from service.store.datasets import DatasetStore
from service.store.engine import DEFAULT_POOL_SIZE, make_engine
from service.store.job_logs import JobLogStore
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


class Repository(JobStore, SweepStore, DatasetStore, JobLogStore):
    """Every query regtrain makes, by domain; one engine and one set of listeners for all."""

    def active_work(self, tenant: str) -> int:
        """How many of the tenant's jobs and sweeps are queued or running (what its cap
        counts), in one statement: a submit's round trips are most of its cost under load."""
        with self._read() as conn:
            return int(conn.execute(_ACTIVE_WORK, {"tenant": tenant}).scalar() or 0)

    def job_submit_state(self, tenant: str, idempotency_key: str | None) -> tuple[Row | None, int]:
        """What a job's submit checks first, in one round trip: the tenant's job stored under
        `idempotency_key` (None without a key, or none yet) and the tenant's active work."""
        if idempotency_key is None:
            return None, self.active_work(tenant)
        with self._read() as conn:
            row = dict(
                conn.execute(_SUBMIT_STATE, {"tenant": tenant, "key": idempotency_key}).mappings().one()
            )
        active = int(row.pop("_active_work") or 0)
        return (row if row["id"] is not None else None), active


def _active_work() -> sa.ColumnElement[int]:
    """The count of a tenant's (:tenant) queued and running jobs and sweeps, as one expression.
    Over aliases, so a statement that also selects from `jobs` cannot correlate it to its own
    rows."""
    active = ("queued", "running")

    def count(table: sa.Table) -> sa.ScalarSelect[int]:
        counted = table.alias(f"active_{table.name}")
        tenant = counted.c.tenant == sa.bindparam("tenant")
        return sa.select(sa.func.count()).where(tenant, counted.c.status.in_(active)).scalar_subquery()

    return count(jobs) + count(sweeps)


# Built once, run with parameters: building them per call (two aliases of wide tables, their
# cache keys) cost more CPU than the round trip.
_ACTIVE_WORK = sa.select(_active_work())
# One row whether or not the key is taken: the count, left-joined with the keyed job.
_SUBMIT_STATE = sa.select(_active_work().label("_active_work"), *jobs.c).select_from(
    sa.select(sa.literal(1).label("one"))
    .subquery("anchor")
    .outerjoin(
        jobs, sa.and_(jobs.c.tenant == sa.bindparam("tenant"), jobs.c.idempotency_key == sa.bindparam("key"))
    )
)


def open_store(url: str, *, migrate_schema: bool = True, pool_size: int = DEFAULT_POOL_SIZE) -> Repository:
    engine = make_engine(url, pool_size)
    if migrate_schema:
        migrate.upgrade(engine)
    return Repository(engine)
