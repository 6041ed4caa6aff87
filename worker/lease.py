"""The lease of a running job: a heartbeat thread that renews it and reads the cancel flag."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Literal

from service.store.sweep_units import SweepUnits

if TYPE_CHECKING:
    from worker.presence import Presence

log = logging.getLogger("regtrain.worker")

StopReason = Literal["cancel", "lost", "shutdown"]


class Lease:
    """Renews the job's lease every heartbeat_seconds while training runs.

    The engine polls `should_stop` every few steps; it only reads an Event, so the training
    loop never waits on the database.
    """

    def __init__(
        self,
        # the Repository (a job's or a sweep's lease) or SweepUnits (a unit's): each
        # subclass's renew() asks the one it was given
        store: Any,
        job_id: str,
        owner: str,
        *,
        lease_seconds: float,
        heartbeat_seconds: float,
        shutdown: threading.Event,
        presence: Presence | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.shutdown = shutdown
        self.reason: StopReason | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)
        # While the lease is held, the worker's row in the fleet's list says it trains this row.
        self.presence = presence
        self._held = ExitStack()

    def __enter__(self) -> Lease:
        if self.presence is not None:
            self._held.enter_context(self.presence.busy_with(self.job_id))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closed.set()
        self._thread.join(timeout=self.heartbeat_seconds + 30)
        self._held.close()

    @property
    def thread_name(self) -> str:
        """Its heartbeat thread's name: a job's log keeps that thread's records too."""
        return self._thread.name

    def should_stop(self) -> bool:
        if self.shutdown.is_set() and self.reason is None:
            self.reason = "shutdown"
        return self._stop.is_set() or self.shutdown.is_set()

    def beat(self) -> None:
        """One renewal; also the last word on a cancel request that raced the end of training."""
        state = self.renew()
        if state is None:
            self.reason = "lost"
            self._stop.set()
        elif state:
            self.reason = "cancel"
            self._stop.set()

    def renew(self) -> bool | None:
        """Extend the lease in the store: True = cancel requested, None = lease lost."""
        return self.store.heartbeat(self.job_id, self.owner, self.lease_seconds)

    def _run(self) -> None:
        while not self._closed.wait(self.heartbeat_seconds):
            try:
                self.beat()
            except Exception:
                # A database hiccup: keep training and try again; if it lasts past the lease,
                # the reaper hands the job on and our writes are refused.
                log.exception("heartbeat of job %s failed", self.job_id)
            if self.reason == "lost":
                log.warning("job %s: lease lost to another worker; stopping", self.job_id)
                return


class SweepLease(Lease):
    """The same lease on a sweep (`job_id` holds the sweep's id)."""

    def renew(self) -> bool | None:
        return self.store.sweep_heartbeat(self.job_id, self.owner, self.lease_seconds)


class UnitLease(Lease):
    """The same lease on a unit of a sweep; it also stops when the sweep is cancelled."""

    def __init__(
        self, units: SweepUnits, unit_id: str, owner: str, *, budget: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(units, unit_id, owner, **kwargs)
        self.units = units
        # With `budget` (the sweep has one), the sweep's stopped_by as of the last beat: a
        # budget its coordinator found reached (contract/sweep_budget.py says what it stops).
        self.budget = budget
        self.stopped_by: dict[str, Any] | None = None

    def renew(self) -> bool | None:
        state = self.units.heartbeat(self.job_id, self.owner, self.lease_seconds)
        if self.budget and state is False and self.stopped_by is None:
            self.stopped_by = self.units.stopped_by(self.job_id)
        return state
