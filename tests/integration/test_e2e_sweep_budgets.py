"""A sweep stops on each of its budgets (spec.budget), end to end on both backends (a real API
and a real Celery worker, SQLite + file broker and PostgreSQL + Redis), and says which in
`stopped_by`; the trials it did not start end `cancelled` with the budget as their reason, the
best of those that finished is retrained, and the sweep ends `succeeded`:

- max_trials: a search asked for 20 trials asks 3; a grid of 4 starts 2;
- max_failed_trials: a grid whose second and third values diverge starts no trial after them;
- time_s: a search of 200 one-trial units stops starting them after 4 s (no assertion on
  how long it took beyond a generous hang bound; on a machine so busy that no trial finished
  within 4 s, it fails budget_exhausted, which the test accepts);
- trial_epochs: 10 trial-epochs of 5-epoch trials train about two trials' worth;
- a budget reached before any trial finished fails the sweep `budget_exhausted`.

Iris and a tiny MLP, one worker (the coordinator trains the units itself, one by one), so each
stop is decided between two units and the counts are exact but for time_s.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
from live_service import FINISHED, Service

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [4]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 2, "batch_size": 32, "device": "cpu"},
}
SPACE: dict[str, Any] = {"optimizer.lr": {"log_uniform": [1e-3, 1e-1]}}


def _run(service: Service, sweep: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    r = service.http.post("/v1/sweeps", json=sweep)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + timeout  # a hang bound, not a timing assertion
    while True:
        r = service.http.get(f"/v1/sweeps/{r.json()['id']}")
        assert r.status_code == 200, r.text
        if r.json()["status"] in FINISHED:
            return r.json()
        assert time.monotonic() < deadline, (r.json()["status"], service.log("worker0"))
        time.sleep(0.3)


def _by_status(sweep: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t in sweep["trials"]:
        out.setdefault(t["status"], []).append(t)
    return out


def _stopped(sweep: dict[str, Any], budget: str) -> None:
    """The sweep ended succeeded, stopped by `budget`, with its best trial retrained."""
    assert sweep["status"] == "succeeded", sweep["error"]
    assert sweep["stopped_by"]["budget"] == budget, sweep["stopped_by"]
    assert sweep["stopped_by"]["at"] and sweep["stopped_by"]["detail"]
    assert sweep["best"]["job_status"] == "succeeded"
    for t in _by_status(sweep).get("cancelled", []):  # not started: untrained, saying why
        assert t["reason"] == f"budget: the sweep's {budget} budget was reached", t
        assert not t["epochs_trained"] and t["score"] is None


def test_max_trials_caps_a_search_and_a_grid(service: Service) -> None:
    search = _run(service, {"base": BASE, "space": SPACE, "sampler": "random", "trials": 20,
                            "parallel": 2, "budget": {"max_trials": 3}})  # fmt: skip
    _stopped(search, "max_trials")
    assert len(search["trials"]) == 3 and all(t["status"] == "succeeded" for t in search["trials"])
    assert "3 trials started, of the 20 asked for" in search["stopped_by"]["detail"]
    study = optuna.load_study(study_name=search["study"]["name"], storage=search["study"]["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3

    grid = _run(service, {"base": BASE, "grid": {"regularization.l2": [0.0, 1e-4, 1e-3, 1e-2]},
                          "parallel": 1, "budget": {"max_trials": 2}})  # fmt: skip
    _stopped(grid, "max_trials")
    assert [t["status"] for t in grid["trials"]] == ["succeeded", "succeeded", "cancelled", "cancelled"]
    assert grid["best"]["index"] in (0, 1) and grid["leaderboard"] == sorted(
        grid["leaderboard"], key=lambda i: grid["trials"][i]["score"]
    )


def test_max_failed_trials_starts_no_trial_after_them(service: Service) -> None:
    # l2 = 100 with sgd lr 0.05 multiplies the weights by 1 - 2·100·0.05 = -9 each step: they
    # diverge within a few epochs (tests/engine/test_sweep.py)
    diverging = {**BASE, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                 "training": {**BASE["training"], "epochs": 30}}  # fmt: skip
    sweep = _run(service, {"base": diverging, "grid": {"regularization.l2": [0.0, 100.0, 99.0, 1e-3, 1e-2]},
                           "parallel": 1, "vectorize": False, "budget": {"max_failed_trials": 2}})  # fmt: skip
    _stopped(sweep, "max_failed_trials")
    assert [t["status"] for t in sweep["trials"]] == [
        "succeeded",
        "failed",
        "failed",
        "cancelled",
        "cancelled",
    ]
    assert [t["error"]["type"] for t in sweep["trials"][1:3]] == ["diverged", "diverged"]
    assert sweep["best"]["index"] == 0
    assert [u["status"] for u in sweep["units"]] == ["succeeded"] * 3 + ["cancelled"] * 2


def test_time_s_stops_a_long_search(service: Service) -> None:
    sweep = _run(service, {"base": BASE, "space": SPACE, "sampler": "random", "trials": 200,
                           "parallel": 1, "budget": {"time_s": 4}})  # fmt: skip
    if sweep["status"] == "failed":  # a machine so busy that no trial finished within 4 s
        assert sweep["error"]["type"] == "budget_exhausted", sweep["error"]
        assert sweep["stopped_by"]["budget"] == "time_s" and sweep["best"] is None
        return
    _stopped(sweep, "time_s")
    assert "of a time_s budget of 4 s" in sweep["stopped_by"]["detail"]
    by = _by_status(sweep)
    assert by["succeeded"] and len(sweep["trials"]) < 200
    assert set(by) <= {"succeeded", "pruned", "cancelled"}, set(by)
    for t in by.get("pruned", []):  # stopped part way: kept what it trained
        assert t["reason"] == "budget: the sweep's time_s budget was reached" and t["epochs_trained"] >= 1
    study = optuna.load_study(study_name=sweep["study"]["name"], storage=sweep["study"]["storage"])
    assert not [t for t in study.trials if t.state.name == "RUNNING"]  # every asked trial ended


def test_trial_epochs_train_about_the_budget(service: Service) -> None:
    five = {**BASE, "training": {**BASE["training"], "epochs": 5}}
    sweep = _run(service, {"base": five, "space": SPACE, "sampler": "random", "trials": 20,
                           "parallel": 1, "budget": {"trial_epochs": 10}})  # fmt: skip
    _stopped(sweep, "trial_epochs")
    trained = sum(t["epochs_trained"] or 0 for t in sweep["trials"])
    assert 10 <= trained <= 15, [(t["status"], t["epochs_trained"]) for t in sweep["trials"]]
    assert len(_by_status(sweep)["succeeded"]) == 2  # 5 + 5 epochs: then none starts
    assert "10 epochs trained, of a trial_epochs budget of 10" in sweep["stopped_by"]["detail"]


def test_a_budget_reached_before_any_trial_finished_fails_the_sweep(service: Service) -> None:
    long = {**BASE, "training": {**BASE["training"], "epochs": 20}}
    sweep = _run(service, {"base": long, "grid": {"regularization.l2": [0.0, 1e-3]}, "parallel": 1,
                           "vectorize": False, "budget": {"trial_epochs": 3}})  # fmt: skip
    assert sweep["status"] == "failed", sweep
    assert sweep["error"]["type"] == "budget_exhausted", sweep["error"]
    assert "trial_epochs budget was reached before any trial finished" in sweep["error"]["message"]
    assert sweep["stopped_by"]["budget"] == "trial_epochs"
    first, second = sweep["trials"]
    assert (first["status"], first["epochs_trained"]) == ("pruned", 3), first
    assert second["status"] == "cancelled" and sweep["best"] is None
