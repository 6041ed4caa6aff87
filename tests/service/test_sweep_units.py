"""A sweep's units as leased rows, on SQLite and on a fresh PostgreSQL database: one claim wins,
a worker whose lease lapsed writes nothing, the reaper hands its unit on with only the trials it
had not finished, and a cancelled or finished sweep stops its units."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.store import Repository, open_store
from service.store.sweep_units import SweepUnits

GRID = {"base": {"dataset": {"name": "iris"}}, "grid": {"regularization.l2": [0, 1, 2, 3]}}


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[Repository, SweepUnits]]:
    store = open_store(store_url)
    yield store, SweepUnits(store.engine)
    store.engine.dispose()


def _sweep(store: Repository, units: SweepUnits, lease_s: float = 60) -> tuple[str, list[str]]:
    row = store.create_sweep(tenant="t", spec=GRID, queue="cpu", trials=[{"l2": i} for i in range(4)])
    assert store.claim_sweep(row["id"], "coordinator", lease_s, 3) is not None
    ids = units.add(row["id"], "coordinator", "cpu", [[0, 1], [2, 3]])
    assert ids is not None
    return row["id"], ids


def _trials(store: Repository, sweep_id: str) -> dict[int, dict[str, Any]]:
    return {t["trial_index"]: t for t in store.trials([sweep_id])[sweep_id]}


def test_one_claim_wins_and_only_its_holder_writes(stores: tuple[Repository, SweepUnits]) -> None:
    store, units = stores
    sweep_id, (first, second) = _sweep(store, units)
    claim = units.claim(first, "a", 60, 3)
    assert claim is not None and claim.todo == (0, 1) and claim.attempt == 1
    assert units.claim(first, "b", 60, 3) is None  # held
    assert units.record_trial(first, "b", sweep_id, 0, status="succeeded") is False
    assert units.record_trial(first, "a", sweep_id, 0, status="succeeded", epochs_trained=3)
    units.progress(first, "a", sweep_id, {1: {"step": 1, "value": 0.5}})
    units.progress(first, "a", sweep_id, {1: {"step": 2, "value": 0.7}})
    trials = _trials(store, sweep_id)
    assert trials[0]["status"] == "succeeded" and trials[0]["worker"] == "a"
    assert trials[1]["status"] == "running" and trials[1]["curve"] == [[1, 0.5], [2, 0.7]]
    assert {t["status"] for i, t in trials.items() if i >= 2} == {"queued"}
    assert units.claim_next(sweep_id, "b", 60, 3).unit_id == second  # type: ignore[union-attr]
    assert units.claim_next(sweep_id, "c", 60, 3) is None  # none left queued


def test_a_lapsed_unit_goes_to_the_next_worker_with_its_unfinished_trials(
    stores: tuple[Repository, SweepUnits],
) -> None:
    store, units = stores
    sweep_id, (first, _) = _sweep(store, units)
    assert units.claim(first, "dead", 0.2, 3) is not None
    assert units.record_trial(first, "dead", sweep_id, 0, status="succeeded")
    time.sleep(0.4)  # its worker went silent: the lease lapsed
    assert units.reap(3, 3600) == [(first, "cpu")]  # back on the queue, with a message to send
    assert units.counts(sweep_id) == {"queued": 2}
    assert _trials(store, sweep_id)[1]["status"] == "queued"
    claim = units.claim(first, "alive", 60, 3)
    assert claim is not None and claim.todo == (1,) and claim.attempt == 2  # trial 0 is not trained again
    assert units.record_trial(first, "dead", sweep_id, 1, status="failed") is False  # too late
    assert units.heartbeat(first, "dead", 60) is None
    assert units.record_trial(first, "alive", sweep_id, 1, status="succeeded")
    assert units.finish(first, "alive", "succeeded")
    row = units.of([sweep_id])[sweep_id][0]
    assert row["status"] == "succeeded" and row["worker"] == "alive" and row["attempts"] == 2
    trials = _trials(store, sweep_id)
    assert (trials[0]["worker"], trials[1]["worker"]) == ("dead", "alive")


def test_a_cancelled_sweep_stops_its_units_and_an_ended_one_settles_them(
    stores: tuple[Repository, SweepUnits],
) -> None:
    store, units = stores
    sweep_id, (first, second) = _sweep(store, units)
    assert units.claim(first, "a", 60, 3) is not None
    assert units.heartbeat(first, "a", 60) is False
    assert store.cancel_sweep(sweep_id) == "requested"
    assert units.heartbeat(first, "a", 60) is True  # the unit's worker stops
    assert units.claim(second, "b", 60, 3) is None  # and no other unit starts
    assert store.finish_sweep(sweep_id, "coordinator", "cancelled")
    assert {u["status"] for u in units.of([sweep_id])[sweep_id]} == {"cancelled"}
    assert {t["status"] for t in _trials(store, sweep_id).values()} == {"cancelled"}


def test_units_are_written_only_by_the_sweeps_coordinator(stores: tuple[Repository, SweepUnits]) -> None:
    store, units = stores
    sweep_id, _ = _sweep(store, units)
    assert units.add(sweep_id, "not-the-coordinator", "cpu", [[0]]) is None
    asked = units.add(
        sweep_id, "coordinator", "cpu", [[4]], {4: {"l2": 4}}, {5: ({"l2": -1}, {"type": "bad_params"})}
    )
    assert asked == [f"{sweep_id}.2"]
    trials = _trials(store, sweep_id)
    assert trials[4]["status"] == "queued" and trials[4]["unit"] == 2
    assert trials[5]["status"] == "failed" and trials[5]["error"] == {"type": "bad_params"}


@pytest.mark.parametrize(("queue", "parallel", "live", "expected"), [
    ("regtrain-cpu", None, [], [list(range(8)), [8, 9]]),  # 8 a unit by default: every worker a share
    # as many units as live workers on the queue can take (a silent one, or one on another
    # queue, is not counted)
    ("regtrain-cpu", None, [("w1", 0), ("w2", 0), ("w3", 600), ("w4", 0, "regtrain-gpu")],
     [list(range(5)), list(range(5, 10))]),
    ("regtrain-cpu", 3, [("w1", 0), ("w2", 0)], [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]),  # parallel rules
    # fewer full units than workers: the folds are dealt over units first (units × fold sets),
    # then the trials over the workers that leaves, so each stacked group stays as wide
    ("regtrain-cpu", None, [(f"w{i}", 0) for i in range(24)], [[i, i + 1] for i in range(0, 10, 2) for _ in range(4)]),
    ("regtrain-gpu", None, [], [list(range(10))]),  # one stacked group on one GPU
    ("regtrain-gpu", 4, [], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]),  # unless asked to spread it
])  # fmt: skip
def test_a_coordinator_splits_a_grid_into_units_by_its_queue(
    tmp_path: Any, queue: str, parallel: int | None, live: list[tuple[Any, ...]], expected: list[list[int]]
) -> None:
    from datetime import timedelta

    import sqlalchemy as sa

    from service.contract.sweep_spec import SweepSpec
    from service.settings import Settings
    from service.store.base import now
    from service.store.tables import workers
    from service.store.workers import WorkerBeat
    from worker.coordinator import coordinate
    from worker.runtime import Runtime

    rt = Runtime(Settings(data_dir=tmp_path, queue_prefix="regtrain-"))
    for name, silent_s, *queues in live:
        beat = WorkerBeat(name, None, "h", queues or ["regtrain-cpu"], "cpu", "0", now(), None, 0.0)
        rt.workers.beat(beat)
        with rt.store.engine.begin() as conn:  # a worker last heard from silent_s ago
            at = now() - timedelta(seconds=silent_s)
            conn.execute(sa.update(workers).where(workers.c.name == name).values(last_heartbeat=at))
    base = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}}
    doc = {"base": base, "grid": {"regularization.l2": [i / 10 for i in range(10)]}, "parallel": parallel}
    doc["cv_folds"] = 4
    sweep = SweepSpec.model_validate(doc)
    row = rt.store.create_sweep(tenant="t", spec=doc, queue=queue, trials=[{"l2": i} for i in range(10)])
    assert rt.store.claim_sweep(row["id"], rt.name, 60, 3) is not None
    sent: list[tuple[str, str]] = []
    # stopped before it trains anything: only its plan is looked at
    assert (
        coordinate(rt, sweep, row["id"], queue, lambda: True, lambda u, q: sent.append((u, q))) == "cancelled"
    )
    written = rt.units.of([row["id"]])[row["id"]]
    assert [u["trials"] for u in written] == expected
    if len(live) == 24:
        assert [u["folds"] for u in written] == [[0], [1], [2], [3]] * 5
    else:
        assert {u["folds"] is None for u in written} == {True}
    assert sent == [(u["id"], queue) for u in written]
    assert {u["status"] for u in written} == {"queued"}


def test_the_reaper_counts_queued_units_when_it_looks_for_lost_messages(
    store_url: str, tmp_path: Any
) -> None:
    """Units' messages wait on the same queues as jobs': a job whose message was lost is found
    even with units queued behind it, and so is a unit whose message was lost, each sent again
    through its own task (on the embedded file broker, with no worker taking messages)."""
    import json

    from service.queue.broker import RUN_JOB_TASK, RUN_SWEEP_UNIT_TASK, make_celery, queue_depth
    from service.settings import Settings
    from worker.runtime import Runtime

    settings = Settings(
        data_dir=tmp_path, database_url=store_url, queue_prefix="t-", lost_message_after_s=0.2
    )
    rt, app, queue = Runtime(settings), make_celery(settings), "t-cpu"

    def on_the_queue() -> list[tuple[str, str]]:
        """(task, id) of every message waiting in the queue's folder."""
        out = []
        for f in sorted((tmp_path / "broker" / "queue").glob(f"*.{queue}.msg")):
            headers = json.loads(f.read_text())["headers"]
            out.append((headers["task"], headers["argsrepr"].strip("[]'\"")))
        return out

    job = rt.store.create_job(tenant="t", spec={}, queue=queue)  # its message never went out
    row = rt.store.create_sweep(tenant="t", spec=GRID, queue=queue, trials=[{"l2": i} for i in range(4)])
    assert rt.store.claim_sweep(row["id"], "coordinator", 60, 3) is not None
    first, second = rt.units.add(row["id"], "coordinator", queue, [[0, 1], [2, 3]]) or []
    app.send_task(RUN_SWEEP_UNIT_TASK, args=[first], queue=queue)
    app.send_task(RUN_SWEEP_UNIT_TASK, args=[second], queue=queue)
    time.sleep(0.3)  # past lost_message_after_s
    rt.reap_once(app)  # 2 messages for 3 queued rows: the longest waiting, the job, is sent again
    assert queue_depth(app, queue) == 3
    assert (RUN_JOB_TASK, job["id"]) in on_the_queue()

    # A unit's message lost (the broker restarted, say): sent again through the unit task.
    for f in (tmp_path / "broker" / "queue").glob(f"*.{queue}.msg"):
        if json.loads(f.read_text())["headers"]["argsrepr"].strip("[]'\"") == first:
            f.unlink()
    time.sleep(0.3)
    rt.reap_once(app)
    assert sorted(on_the_queue()) == sorted(
        [(RUN_JOB_TASK, job["id"]), (RUN_SWEEP_UNIT_TASK, first), (RUN_SWEEP_UNIT_TASK, second)]
    )
    rt.store.engine.dispose()


def test_a_unit_carries_on_while_its_sweep_waits_for_a_new_coordinator(
    stores: tuple[Repository, SweepUnits],
) -> None:
    # The coordinator's worker was lost: the reaper puts the sweep back on the queue. A unit
    # another worker holds goes on (stopping it left its trials cancelled when the sweep ended).
    store, units = stores
    sweep_id, (first, _) = _sweep(store, units, lease_s=0.2)
    assert units.claim(first, "a", 60, 3) is not None
    time.sleep(0.4)
    assert store.reap_sweeps(3, 3600).resend == [(sweep_id, "cpu")]
    assert store.get_sweep(sweep_id)["status"] == "queued"  # type: ignore[index]
    assert units.heartbeat(first, "a", 60) is False
    assert units.record_trial(first, "a", sweep_id, 0, status="succeeded")


def test_units_refilling_at_once_never_ask_past_the_sweeps_trials(
    stores: tuple[Repository, SweepUnits],
) -> None:
    """A search's running units write the trials they ask (their first, then one per freed
    slot) as their own, under their lease, and never more than the sweep may ask, however many
    units ask at the same time; each trial's started_at is its own."""
    import threading

    store, units = stores
    row = store.create_sweep(tenant="t", spec={"name": "s"}, queue="cpu", trials=[])
    sweep_id = row["id"]
    assert store.claim_sweep(sweep_id, "coordinator", 60, 3) is not None
    ids = units.add(sweep_id, "coordinator", "cpu", [[] for _ in range(4)]) or []
    claims = [units.claim(u, f"w{i}", 60, 3) for i, u in enumerate(ids)]
    assert all(c is not None and c.todo == () and c.queue == "cpu" for c in claims)
    taken: dict[int, list[int] | None] = {}

    def refill(k: int) -> None:
        new = {10 * k + j: {"l2": j} for j in range(3)}
        taken[k] = units.add_trials(ids[k], f"w{k}", sweep_id, new, {}, cap=7)

    threads = [threading.Thread(target=refill, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(v or []) for v in taken.values()) == 7 == units.asked(sweep_id)
    assert units.add_trials(ids[0], "w1", sweep_id, {99: {}}, {}, cap=99) is None  # not its holder
    trials = _trials(store, sweep_id)
    held = {u["unit_index"]: u["trials"] for u in units.of([sweep_id])[sweep_id]}
    for k, got in taken.items():
        assert held[k] == got and all(
            trials[i]["unit"] == k and trials[i]["worker"] == f"w{k}" for i in got or []
        )
    assert {t["status"] for t in trials.values()} == {"running"}
    # a trial that fails at once is counted, and written failed
    assert (
        units.add_trials(ids[0], "w0", sweep_id, {}, {50: ({"l2": -1}, {"type": "bad_params"})}, cap=8) == []
    )
    assert _trials(store, sweep_id)[50]["status"] == "failed" and units.asked(sweep_id) == 8
    k, got = next((k, v) for k, v in sorted(taken.items()) if v)  # a unit that won some
    first = got[0]
    before = trials[first]["started_at"]
    time.sleep(0.01)
    assert units.trial_started(ids[k], f"w{k}", sweep_id, first)
    assert not units.trial_started(ids[k], "not-its-holder", sweep_id, first)
    assert _trials(store, sweep_id)[first]["started_at"] > before


def test_a_trial_split_over_fold_units_ends_once_its_last_part_is_recorded(
    stores: tuple[Repository, SweepUnits],
) -> None:
    """Two units train a trial's folds {0, 2} and {1, 3}: the first part keeps it running (its
    epochs counted), the last summarizes it as one unit over every fold would; a unit retried
    after its part was recorded does not train that trial again; a failed part ends it."""
    store, units = stores
    row = store.create_sweep(tenant="t", spec=GRID, queue="cpu", trials=[{"l2": i} for i in range(2)])
    sweep_id = row["id"]
    assert store.claim_sweep(sweep_id, "coordinator", 60, 3) is not None
    ids = units.add(sweep_id, "coordinator", "cpu", [[0, 1], [0, 1]], folds=[[0, 2], [1, 3]]) or []
    first, second = (units.claim(u, f"w{k}", 60, 3) for k, u in enumerate(ids))
    assert first is not None and first.folds == (0, 2) and second is not None and second.folds == (1, 3)

    def part(scores: list[float], acc: float, best: float) -> dict[str, Any]:
        metrics = {"val_accuracy": acc, "val_loss": 1 - acc, "val_accuracy_std": 0.0}
        return dict(status="succeeded", metrics=metrics, score=sum(scores) / 2, fold_scores=scores,
                    best_epoch=best, vectorized=True, error=None, epochs_trained=6, pruned_at_epoch=None,
                    reason=None)  # fmt: skip

    assert not units.record_part(ids[0], "w1", sweep_id, 0, 4, "val_accuracy", **part([0.8, 0.6], 0.7, 2))
    assert units.record_part(ids[0], "w0", sweep_id, 0, 4, "val_accuracy", **part([0.8, 0.6], 0.7, 2))
    t = _trials(store, sweep_id)[0]
    assert t["status"] == "running" and t["epochs_trained"] == 6 and t["score"] is None
    assert units.release(ids[0], "w0") == "cpu"  # its worker stops: the next one skips trial 0
    again = units.claim(ids[0], "w2", 60, 3)
    assert again is not None and again.todo == (1,)
    assert units.record_part(ids[1], "w1", sweep_id, 0, 4, "val_accuracy", **part([0.9, 0.5], 0.7, 4))
    t = _trials(store, sweep_id)[0]
    assert t["status"] == "succeeded" and t["epochs_trained"] == 12 and t["finished_at"]
    assert t["fold_scores"] == [0.8, 0.6, 0.9, 0.5] and t["score"] == pytest.approx(0.7)
    assert t["metrics"]["val_loss"] == pytest.approx(0.3) and t["best_epoch"] == pytest.approx(3)
    assert t["metrics"]["val_accuracy_std"] == pytest.approx((0.025) ** 0.5)
    failed = dict(part([0.5, 0.5], 0.5, 1), status="failed", error={"type": "diverged"}, score=None)
    assert units.record_part(ids[1], "w1", sweep_id, 1, 4, "val_accuracy", **failed)
    t = _trials(store, sweep_id)[1]
    assert t["status"] == "failed" and t["error"] == {"type": "diverged"}
    # the other part, later, changes nothing; the fold-unit that succeeded ends no trial itself
    assert units.record_part(ids[0], "w2", sweep_id, 1, 4, "val_accuracy", **part([0.9, 0.9], 0.9, 1))
    assert _trials(store, sweep_id)[1]["status"] == "failed"
    assert units.finish(ids[0], "w2", "succeeded")
    assert {t["status"] for t in _trials(store, sweep_id).values()} == {"succeeded", "failed"}
