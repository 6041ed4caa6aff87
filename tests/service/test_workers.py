"""The fleet's list: the workers' rows in the store (both backends), GET /v1/workers with each
tenant seeing only its own ids, and the per-worker series of /metrics. The same against real
worker processes: tests/integration/test_fleet_view.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.queue.broker import make_celery
from service.settings import Settings
from service.store import Repository
from service.store.base import now
from service.store.sweep_units import SweepUnits
from service.store.tables import workers as workers_table
from service.store.workers import WorkerBeat, WorkerRegistry
from worker.presence import Presence

SPEC = {"name": "s", "dataset": {"name": "digits"}, "training": {"epochs": 3}}
DIGITS_MLP = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2},
}


def _beat(name: str, busy_with: str | None = None, rate: float = 0.0) -> WorkerBeat:
    return WorkerBeat(
        name=name,
        celery_name=f"regtrain-cpu-1@{name}",
        host="h",
        queues=["cpu", "gpu"],
        device="cpu",
        version="1.0",
        started_at=now(),
        busy_with=busy_with,
        epochs_per_second=rate,
    )


def test_rows_say_what_each_worker_trains_and_whose_it_is(store: Repository) -> None:
    registry = WorkerRegistry(store.engine)
    job_id = store.create_job(tenant="a", spec=SPEC, queue="cpu")["id"]
    sweep_id = store.create_sweep(tenant="b", spec={}, queue="cpu", trials=[{"x": 1}])["id"]
    assert store.claim_sweep(sweep_id, "h:3", 30, 3) is not None
    (unit_id,) = SweepUnits(store.engine).add(sweep_id, "h:3", "cpu", [[0]]) or []

    registry.beat(_beat("h:1", job_id, 0.5))
    registry.beat(_beat("h:2"))
    registry.beat(_beat("h:3", sweep_id))
    registry.beat(_beat("h:4", unit_id))
    registry.beat(_beat("h:3", unit_id))  # the coordinator now trains a unit itself: one row still
    rows = {r.name: r for r in registry.alive(60)}
    assert list(rows) == ["h:1", "h:2", "h:3", "h:4"]
    assert (rows["h:1"].busy_with, rows["h:1"].busy_tenant, rows["h:1"].epochs_per_second) == (
        job_id,
        "a",
        0.5,
    )
    assert [rows[n].busy_kind for n in ("h:1", "h:2", "h:3")] == ["job", None, "unit"]
    assert (rows["h:2"].busy_with, rows["h:2"].busy_tenant) == (None, None)
    assert (rows["h:3"].busy_with, rows["h:3"].busy_tenant) == (unit_id, "b")
    assert rows["h:4"].queues == ["cpu", "gpu"] and rows["h:4"].celery_name == "regtrain-cpu-1@h:4"

    registry.leave("h:2")  # a clean stop
    with store.engine.begin() as conn:  # h:4 killed: its heartbeat stopped two minutes ago
        conn.execute(
            workers_table.update()
            .where(workers_table.c.name == "h:4")
            .values(last_heartbeat=now() - timedelta(seconds=120))
        )
    assert [r.name for r in registry.alive(60)] == ["h:1", "h:3"]
    assert registry.purge(60) == 1
    assert [r.name for r in registry.alive(3600)] == ["h:1", "h:3"]


def test_each_tenant_sees_the_fleet_but_only_its_own_ids(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="a:key-a,b:key-b")
    as_a, as_b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    r = client.post("/v1/jobs", json=DIGITS_MLP, headers=as_a)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    registry = WorkerRegistry(client.app.state.store.engine)  # type: ignore[attr-defined]
    registry.beat(_beat("h:1", job_id, 2.5))
    registry.beat(_beat("h:2"))

    assert client.get("/v1/workers").status_code == 401
    mine = {w["name"]: w for w in client.get("/v1/workers", headers=as_a).json()["workers"]}
    theirs = {w["name"]: w for w in client.get("/v1/workers", headers=as_b).json()["workers"]}
    assert (mine["h:1"]["busy"], mine["h:1"]["busy_with"], mine["h:1"]["busy_kind"]) == (True, job_id, "job")
    assert (theirs["h:1"]["busy"], theirs["h:1"]["busy_with"], theirs["h:1"]["busy_kind"]) == (
        True,
        None,
        None,
    )
    assert (mine["h:2"]["busy"], mine["h:2"]["busy_with"]) == (False, None)
    assert job_id not in client.get("/v1/workers", headers=as_b).text
    assert mine["h:1"]["queues"] == ["cpu", "gpu"] and mine["h:1"]["epochs_per_second"] == 2.5

    # /metrics (no key, like the probes): one series per live worker, with no job id in sight
    text = client.get("/metrics").text
    assert job_id not in text
    samples = {
        (s.name, s.labels.get("worker")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("regtrain_worker_")
    }
    assert samples == {
        ("regtrain_worker_busy", "h:1"): 1.0,
        ("regtrain_worker_busy", "h:2"): 0.0,
        ("regtrain_worker_epochs_per_second", "h:1"): 2.5,
        ("regtrain_worker_epochs_per_second", "h:2"): 0.0,
    }
    registry.leave("h:1")
    assert [w["name"] for w in client.get("/v1/workers", headers=as_a).json()["workers"]] == ["h:2"]


def test_presence_names_the_innermost_lease_it_holds_and_counts_epochs() -> None:
    presence = Presence("h:1", "h", 1.0)
    seen: list[WorkerBeat] = []

    class Registry:
        def beat(self, beat: WorkerBeat) -> None:
            seen.append(beat)

    def busy() -> str | None:
        presence.beat(Registry(), None, [], None)  # type: ignore[arg-type]
        return seen[-1].busy_with

    with presence.busy_with("sweep"):
        assert busy() == "sweep"
        with presence.busy_with("sweep.0"):  # the coordinator trains a unit itself
            for _ in range(3):
                presence.epoch()
            assert busy() == "sweep.0"
        assert busy() == "sweep"
    assert busy() is None
    assert seen[-1].epochs_per_second == 3 / 60


def test_celery_remote_control_and_events_are_on_with_redis_only(tmp_path: Path) -> None:
    """`celery inspect` and Flower need them; the embedded file broker cannot carry them, even
    when asked (see broker.celery_events)."""

    def conf(**settings: Any) -> tuple[bool, bool]:
        c = make_celery(Settings(data_dir=tmp_path, **settings)).conf
        return c.worker_enable_remote_control, c.worker_send_task_events

    assert conf() == (False, False)
    assert conf(celery_events=True) == (False, False)
    assert conf(broker_url="redis://127.0.0.1:6379/0") == (True, True)
    assert conf(broker_url="redis://127.0.0.1:6379/0", celery_events=False) == (False, False)
