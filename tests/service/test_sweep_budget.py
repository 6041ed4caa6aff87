"""A sweep's budget (SweepSpec.budget, contract/sweep_budget.py): validated next to its fields,
judged by one pure function, shown by POST /v1/sweeps:validate (max_trials lowers the trials it
plans and the trainings it counts against the cap), and the stop as the store keeps it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.contract.sweep_budget import Spent, no_trial_finished, reached, stopped_by, trial_reason
from service.contract.sweep_spec import Budget, SweepSpec, planned_trials, trainings, trial_count
from service.store import open_store
from service.store.sweep_units import SweepUnits
from worker.lease import UnitLease

BASE: dict[str, Any] = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}}
SPACE: dict[str, Any] = {"optimizer.lr": {"log_uniform": [1e-3, 1e-1]}}


def _sweep(**over: Any) -> SweepSpec:
    return SweepSpec.model_validate({"base": BASE, "space": SPACE, "trials": 20, **over})


def test_a_budget_needs_at_least_one_field_each_within_its_bounds() -> None:
    with pytest.raises(ValidationError, match="at least one of max_trials"):
        _sweep(budget={})
    for field, bad in (("max_trials", 0), ("max_trials", 257), ("max_failed_trials", 0), ("time_s", 0),
                       ("time_s", -1), ("trial_epochs", 0), ("time_s", 31 * 86400)):  # fmt: skip
        with pytest.raises(ValidationError) as e:
            _sweep(budget={field: bad})
        assert e.value.errors()[0]["loc"] == ("budget", field), (field, bad)
    with pytest.raises(ValidationError, match="extra"):
        _sweep(budget={"max_trial": 3})  # a typo is refused, not ignored
    assert _sweep(budget={"time_s": 2.5}).budget == Budget(time_s=2.5)
    assert _sweep().budget is None


def test_a_path_takes_no_budget() -> None:
    with pytest.raises(ValidationError, match="budget: a path is one chain"):
        SweepSpec.model_validate(
            {"base": BASE, "path": {"regularization.l2": [1e-2, 1e-3]}, "budget": {"max_trials": 1}}
        )


def test_max_trials_caps_the_planned_trials_and_trainings() -> None:
    search = _sweep(budget={"max_trials": 3}, cv_folds=2)
    assert (trial_count(search), planned_trials(search), trainings(search)) == (20, 3, 6)
    grid = SweepSpec.model_validate(
        {"base": BASE, "grid": {"optimizer.lr": [0.1, 0.01, 0.001]}, "budget": {"max_trials": 10}}
    )
    assert (trial_count(grid), planned_trials(grid)) == (3, 3)  # a cap above the grid changes nothing
    assert planned_trials(_sweep(budget={"time_s": 5})) == 20


def test_the_first_budget_reached_is_named_with_how() -> None:
    budget = Budget(time_s=3, trial_epochs=10, max_failed_trials=2)
    assert reached(None, Spent(1e9, 10**9, 10**9)) is None
    assert reached(budget, Spent(2.9, 9, 1)) is None
    assert reached(budget, Spent(3.0, 0, 0)) == (
        "time_s",
        "3.0 s since the sweep started, of a time_s budget of 3 s",
    )
    assert reached(budget, Spent(0, 10, 0)) == (
        "trial_epochs",
        "10 epochs trained, of a trial_epochs budget of 10",
    )
    assert reached(budget, Spent(0, 0, 2)) == (
        "max_failed_trials",
        "2 trials failed, of a max_failed_trials budget of 2",
    )
    # max_trials caps what is planned; it is not judged on what was spent
    assert reached(Budget(max_trials=1), Spent(1e9, 10**9, 10**9)) is None
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    stop = stopped_by("time_s", at, "how")
    assert stop == {"budget": "time_s", "at": "2026-01-02T03:04:05+00:00", "detail": "how"}
    assert "time_s" in trial_reason("time_s") and "before any trial finished: how" in no_trial_finished(stop)


def test_validate_reports_the_trials_max_trials_leaves(make_client: Any) -> None:
    client: TestClient = make_client()
    body = {"base": BASE, "space": SPACE, "trials": 20, "budget": {"max_trials": 3}}
    r = client.post("/v1/sweeps:validate", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["trials"], r.json()["trainings"]) == (3, 3)
    assert r.json()["spec"]["budget"] == {
        "max_trials": 3,
        "max_failed_trials": None,
        "time_s": None,
        "trial_epochs": None,
    }
    r = client.post("/v1/sweeps:validate", json={**body, "budget": {}})
    assert r.status_code == 422 and ["body", "budget"] in [e["loc"] for e in r.json()["detail"]], r.text
    # a sweep over the cap on trainings is admitted when its budget keeps it within
    capped: TestClient = make_client(max_sweep_trainings=5)
    assert capped.post("/v1/sweeps:validate", json={**body, "budget": None}).status_code == 422
    assert capped.post("/v1/sweeps:validate", json=body).status_code == 200


GRID = {"base": {"dataset": {"name": "iris"}}, "grid": {"regularization.l2": [0, 1, 2, 3, 4]}}


def test_a_stop_is_written_once_cancels_what_no_worker_took_and_reaches_the_running_units(
    store_url: str,
) -> None:
    """On SQLite and PostgreSQL (SweepUnits): the coordinator's stop, as another worker's unit
    learns it (UnitLease reads stopped_by as it beats) and as a late claim finds it."""
    store = open_store(store_url)
    units = SweepUnits(store.engine)
    try:
        row = store.create_sweep(tenant="t", spec=GRID, queue="cpu", trials=[{"l2": i} for i in range(5)])
        sweep_id = row["id"]
        assert store.claim_sweep(sweep_id, "coordinator", 60, 3) is not None
        first, second = units.add(sweep_id, "coordinator", "cpu", [[0, 1], [2, 3]]) or []
        claim = units.claim(first, "other", 60, 3)
        assert claim is not None and claim.sweep_started_at is not None and claim.epochs_before == 0
        assert units.record_trial(first, "other", sweep_id, 0, status="succeeded", epochs_trained=4)
        assert units.record_trial(first, "other", sweep_id, 1, status="failed", epochs_trained=2)
        assert units.spent(sweep_id)[1:] == (6, 1)

        lease = UnitLease(
            units,
            first,
            "other",
            budget=True,
            lease_seconds=60,
            heartbeat_seconds=60,
            shutdown=threading.Event(),
        )
        lease.beat()
        assert lease.stopped_by is None and not lease.should_stop()
        reason = trial_reason("time_s")
        stop = stopped_by("time_s", datetime.now(UTC), "how")
        assert units.stop(sweep_id, "someone else", stop, reason) is None  # only the sweep's holder
        assert units.stop(sweep_id, "coordinator", stop, reason) == stop
        later = stopped_by("trial_epochs", datetime.now(UTC), "later")
        assert units.stop(sweep_id, "coordinator", later, reason) == stop  # the first reached wins
        lease.beat()
        assert lease.stopped_by == stop and not lease.should_stop()  # a stop, not a cancel
        assert units.claim(second, "late", 60, 3) is None  # cancelled: no worker starts it
        trials = {t["trial_index"]: t for t in store.trials([sweep_id])[sweep_id]}
        assert [trials[i]["status"] for i in range(5)] == [
            "succeeded",
            "failed",
            "cancelled",
            "cancelled",
            "cancelled",
        ]
        assert {trials[i]["reason"] for i in (2, 3, 4)} == {reason}
        assert [u["status"] for u in units.of([sweep_id])[sweep_id]] == ["running", "cancelled"]
        assert store.get_sweep(sweep_id)["stopped_by"] == stop  # type: ignore[index]
    finally:
        store.engine.dispose()
