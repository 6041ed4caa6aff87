"""The fleet as its workers report it: one row per worker process, upserted by the worker's
presence thread every heartbeat (worker/presence.py), deleted when the worker shuts down
cleanly. A worker killed outright cannot delete its row; readers skip a row whose heartbeat is
older than the lease (the same silence after which the reaper hands the worker's job to another),
and the reaper of any worker deletes such rows.

The broker is not asked: Celery's own view (`celery inspect`, Flower) needs remote control and
events, which the embedded file broker cannot carry, and the store is the truth either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.store.base import StoreBase, now
from service.store.tables import jobs, sweep_units, sweeps
from service.store.tables import workers as workers_table


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker says of itself at each heartbeat."""

    name: str
    celery_name: str | None
    host: str
    queues: list[str]
    device: str | None
    version: str
    started_at: datetime
    busy_with: str | None
    epochs_per_second: float


@dataclass(frozen=True)
class WorkerRow:
    """A live worker, with the tenant of what it trains (None when idle, or when the job, sweep
    or unit is gone), so that the API shows each tenant only its own ids."""

    name: str
    celery_name: str | None
    host: str
    queues: list[str]
    device: str | None
    version: str
    started_at: datetime
    last_heartbeat: datetime
    busy_with: str | None
    busy_kind: str | None  # "job", "sweep" (its coordinator) or "unit"
    busy_tenant: str | None
    epochs_per_second: float


class WorkerRegistry(StoreBase):
    def beat(self, beat: WorkerBeat) -> None:
        """Write the worker's row (made on its first beat). Only its own process writes a row,
        so an UPDATE, then an INSERT if there was none, never races."""
        values = {
            "celery_name": beat.celery_name,
            "host": beat.host,
            "queues": beat.queues,
            "device": beat.device,
            "version": beat.version,
            "started_at": beat.started_at,
            "last_heartbeat": now(),
            "busy_with": beat.busy_with,
            "epochs_per_second": beat.epochs_per_second,
        }
        with self._write() as conn:
            updated = conn.execute(
                workers_table.update().where(workers_table.c.name == beat.name).values(**values)
            ).rowcount
            if not updated:
                conn.execute(workers_table.insert().values(name=beat.name, **values))

    def leave(self, name: str) -> None:
        """A worker that shuts down cleanly leaves the fleet at once."""
        with self._write() as conn:
            conn.execute(workers_table.delete().where(workers_table.c.name == name))

    def alive(self, within_s: float) -> list[WorkerRow]:
        """The workers heard from in the last `within_s` seconds, by name."""
        since = now() - timedelta(seconds=within_s)
        with self._read() as conn:
            rows = conn.execute(_ALIVE, {"since": since}).mappings().all()
        return [WorkerRow(**r) for r in rows]

    def live_on(self, queue: str, within_s: float) -> int:
        """How many workers heard from in the last `within_s` seconds take messages from
        `queue`: what a sweep's coordinator splits its work for (worker/coordinator.py)."""
        since = now() - timedelta(seconds=within_s)
        query = sa.select(workers_table.c.queues).where(workers_table.c.last_heartbeat >= since)
        with self._read() as conn:
            return sum(1 for (queues,) in conn.execute(query) if queue in (queues or []))

    def purge(self, silent_s: float) -> int:
        """Delete the rows of workers silent for more than `silent_s` (killed, not stopped)."""
        before = now() - timedelta(seconds=silent_s)
        with self._write() as conn:
            return conn.execute(
                workers_table.delete().where(workers_table.c.last_heartbeat < before)
            ).rowcount


def _alive() -> sa.Select[tuple[object, ...]]:
    # busy_with names a job, a sweep (its coordinator) or a sweep unit ("{sweep}.{index}"):
    # whichever it is, the tenant comes from the row it names, in the same statement.
    unit = sweep_units.alias("busy_unit")
    unit_sweep = sweeps.alias("busy_unit_sweep")
    busy_sweep = sweeps.alias("busy_sweep")
    w = workers_table
    tenant = sa.func.coalesce(jobs.c.tenant, busy_sweep.c.tenant, unit_sweep.c.tenant)
    kind = sa.case(
        (jobs.c.id.is_not(None), "job"),
        (busy_sweep.c.id.is_not(None), "sweep"),
        (unit.c.id.is_not(None), "unit"),
    )
    return (
        sa.select(*w.c, kind.label("busy_kind"), tenant.label("busy_tenant"))
        .select_from(
            w.outerjoin(jobs, jobs.c.id == w.c.busy_with)
            .outerjoin(busy_sweep, busy_sweep.c.id == w.c.busy_with)
            .outerjoin(unit, unit.c.id == w.c.busy_with)
            .outerjoin(unit_sweep, unit_sweep.c.id == unit.c.sweep_id)
        )
        .where(w.c.last_heartbeat >= sa.bindparam("since"))
        .order_by(w.c.name)
    )


_ALIVE = _alive()
