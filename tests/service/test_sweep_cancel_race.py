"""A cancel that races the end of a sweep's units: a unit's lease can see the request a
heartbeat before the sweep's own, end its trials cancelled, and leave the coordinator finding
every unit ended. The sweep then ends cancelled, not "every trial failed" (seen in CI:
tests/integration/test_e2e_sweeps.py::test_cancel_a_running_sweep)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from service.store import Repository, open_store
from worker.lease import SweepLease
from worker.sweep_task import settled_status

GRID = {"base": {"dataset": {"name": "iris"}}, "grid": {"regularization.l2": [0, 1]}}


@pytest.fixture
def store(store_url: str) -> Iterator[Repository]:
    s = open_store(store_url)
    yield s
    s.engine.dispose()


def _held(store: Repository) -> tuple[str, SweepLease]:
    row = store.create_sweep(tenant="t", spec=GRID, queue="cpu", trials=[{"l2": 0}, {"l2": 1}])
    assert store.claim_sweep(row["id"], "w", 60, 3) is not None
    # a heartbeat far off: the lease has not read the store since the claim, as when the
    # cancel lands between two of its beats
    lease = SweepLease(
        store, row["id"], "w", lease_seconds=60, heartbeat_seconds=3600, shutdown=threading.Event()
    )
    return row["id"], lease


def test_a_cancel_the_sweeps_lease_has_not_read_yet_settles_it_cancelled(store: Repository) -> None:
    sweep_id, lease = _held(store)
    assert store.cancel_sweep(sweep_id, "t") == "requested"
    assert not lease.should_stop()  # not seen yet
    assert settled_status(lease, "succeeded") == "cancelled"


def test_a_sweep_nobody_cancelled_stays_as_its_units_left_it(store: Repository) -> None:
    _, lease = _held(store)
    assert settled_status(lease, "succeeded") == "succeeded"
    assert settled_status(lease, "cancelled") == "cancelled"
