"""Sweeps that search and prune, end to end on both backends: HTTP → worker → Optuna's
ask/tell with the study in regtrain's database → stacked trials, pruned by ASHA → the best
retrained as a job → a sweep that ends only when that job has its test metrics; the events of
the sweep as they happen; the study opened with optuna.load_study from the document's URL."""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
import pytest
from live_service import FINISHED, Service

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [16]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 4, "batch_size": 64, "device": "cpu"},
}
EPOCHS, FOLDS = 4, 2


def _events(service: Service, sweep_id: str, timeout: float = 240) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the sweep's stream, read live until `done`."""
    out: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    with service.http.stream("GET", f"/v1/sweeps/{sweep_id}/events", timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                out.append((kind, json.loads(line[6:])))
                if kind == "done":
                    return out
            assert time.monotonic() < deadline, f"no done after {timeout} s: {out[-3:]}"
    pytest.fail(f"the stream ended without done: {out[-3:]}")


def test_tpe_asha_with_cv_prunes_and_ends_with_the_retrained_job(service: Service) -> None:
    r = service.http.post(
        "/v1/sweeps",
        json={
            "name": "search",
            "base": BASE,
            "space": {
                "regularization.l2": {"log_uniform": [1e-6, 0.1]},
                "optimizer.lr": {"log_uniform": [1e-5, 0.05]},
                "optimizer.name": {"choice": ["adam", "sgd"]},
                "optimizer.momentum": {"uniform": [0.0, 0.95], "when": {"optimizer.name": "sgd"}},
            },
            "sampler": "tpe",
            "trials": 8,
            "parallel": 4,
            "pruner": {"type": "asha", "grace_epochs": 2, "reduction_factor": 2, "min_trials": 2},
            "objective": {"metric": "val_accuracy", "mode": "max"},
            "cv_folds": FOLDS,
        },
    )
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    assert r.json()["study"]["name"] and r.json()["trials"] == []  # asked as it runs

    events = _events(service, sweep_id)
    kinds = [k for k, _ in events]
    trial_events = [d for k, d in events if k == "trial"]
    assert kinds[0] == "status" and kinds[-1] == "done"
    for index in range(8):  # each trial starts, then ends, in its events
        mine = [d["event"] for d in trial_events if d["index"] == index]
        assert mine[0] == "started" and mine[-1] in ("succeeded", "pruned"), (
            mine,
            [(k, d.get("index"), d.get("event"), d.get("status")) for k, d in events],
        )
    assert any(d["event"] == "epoch" and d["progress"]["step"] >= 1 for d in trial_events)
    assert any(d["event"] == "pruned" and d["status"] == "pruned" for d in trial_events)
    sweep = events[-1][1]
    assert sweep["status"] == "succeeded", sweep["error"]

    trials = sweep["trials"]
    assert len(trials) == 8
    for t in trials:  # the conditional field only where its condition holds
        assert ("optimizer.momentum" in t["params"]) == (t["params"]["optimizer.name"] == "sgd")
    pruned = [t for t in trials if t["status"] == "pruned"]
    done = [t for t in trials if t["status"] == "succeeded"]
    assert pruned and done
    for t in pruned:
        assert 2 <= t["pruned_at_epoch"] < EPOCHS * FOLDS and "asha" in t["reason"]
        assert t["epochs_trained"] == t["pruned_at_epoch"] and t["score"] is None
    assert all(t["epochs_trained"] == EPOCHS * FOLDS and len(t["fold_scores"]) == FOLDS for t in done)
    assert sweep["leaderboard"][0] == sweep["best"]["index"]
    # One worker: one unit, its stacked group of `parallel` 4 kept full as trials were pruned or
    # ended, with the next trials the sampler proposed (continuous batching).
    assert [u["trials"] for u in sweep["units"]] == [list(range(8))] and sweep["units"][0]["worker"]
    for t in trials:  # each trial's own times: the refilled ones started as slots freed
        assert t["started_at"] and t["finished_at"] and t["started_at"] < t["finished_at"]
    assert len({t["started_at"] for t in trials}) > 1
    # Which fields mattered (worker/importance.py): fANOVA over the succeeded trials, most
    # important first, the conditional momentum left out (not every trial has it).
    found = sweep["param_importances"]
    if len({t["score"] for t in done}) >= 2:
        assert found is not None and set(found) <= {"regularization.l2", "optimizer.lr", "optimizer.name"}
        assert list(found.values()) == sorted(found.values(), reverse=True)
        assert sum(found.values()) == pytest.approx(1.0)
    else:
        assert found is None

    # The sweep ended only once its best trial's retrain had: best carries the test metrics.
    best = sweep["best"]
    job = service.job(best["job_id"])
    assert job["status"] == "succeeded" and best["job_status"] == "succeeded"
    # the job's numbers; its class report (per_class, confusion_matrix) stays on the job
    scalars = {k: v for k, v in job["result"]["metrics"].items() if not isinstance(v, (dict, list))}
    assert best["test_metrics"] == scalars and "confusion_matrix" in job["result"]["metrics"]
    assert 0.0 <= best["test_metrics"]["test_accuracy"] <= 1.0

    study = optuna.load_study(study_name=sweep["study"]["name"], storage=sweep["study"]["storage"])
    states = {t.number: t.state.name for t in study.trials}
    assert states == {t["index"]: {"succeeded": "COMPLETE", "pruned": "PRUNED"}[t["status"]] for t in trials}
    assert study.best_value == pytest.approx(max(t["score"] for t in done))
    assert study.trials[pruned[0]["index"]].intermediate_values  # its curve stays readable
    if service.backend == "fleet":  # the URL's user, never a password
        assert sweep["study"]["storage"].startswith("postgresql+psycopg://postgres@")

    # The stream of a finished sweep: every trial, then done at once.
    again = _events(service, sweep_id, timeout=30)
    assert again[-1][0] == "done"
    assert {d["index"] for k, d in again if k == "trial" and d["event"] != "started"} == set(range(8))


def test_seeds_one_se_and_an_edge_warning_on_a_grid(service: Service) -> None:
    if service.backend != "embedded":
        pytest.skip("once is enough: the search test covers both backends")
    r = service.http.post(
        "/v1/sweeps",
        json={
            "base": {**BASE, "dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [8]}},
            "grid": {"regularization.l2": [0, 1e-4, 1e-3, 1e-2]},
            "objective": {"metric": "val_loss", "mode": "min"},
            "cv_folds": 2,
            "seeds": 2,
            "select": "one_se",
        },
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while (sweep := service.http.get(f"/v1/sweeps/{r.json()['id']}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, sweep
        time.sleep(0.3)
    assert sweep["status"] == "succeeded", sweep["error"]
    trials = sweep["trials"]
    assert all(t["epochs_trained"] == EPOCHS * 2 * 2 and len(t["fold_scores"]) == 4 for t in trials)
    top = min(trials, key=lambda t: t["score"])
    import statistics

    se = statistics.stdev(top["fold_scores"]) / len(top["fold_scores"]) ** 0.5
    chosen = next(t for t in trials if t["index"] == sweep["best"]["index"])
    assert chosen["score"] <= top["score"] + se + 1e-12
    # the most regularized within one SE: no larger λ is within it
    assert all(
        t["score"] > top["score"] + se
        for t in trials
        if t["params"]["regularization.l2"] > chosen["params"]["regularization.l2"]
    )
    assert isinstance(sweep["warnings"], list)
    if chosen["params"]["regularization.l2"] in (0, 1e-2):
        assert sweep["warnings"] and "regularization.l2" in sweep["warnings"][0]
    assert sweep["best"]["test_metrics"]


def test_a_lost_worker_mid_search_hands_its_unit_to_the_next_worker(service: Service) -> None:
    if service.backend != "embedded":
        pytest.skip("once is enough: on the embedded backend (see test_e2e_sweeps)")
    import os
    import signal

    slow = {
        **BASE,
        "model": {"type": "mlp", "hidden": [64]},
        "training": {"epochs": 12, "batch_size": 32, "device": "cpu"},
    }
    r = service.http.post(
        "/v1/sweeps",
        json={
            "base": slow,
            "space": {
                "regularization.l2": {"log_uniform": [1e-6, 1e-2]},
                "optimizer.lr": {"log_uniform": [1e-3, 3e-2]},
            },
            "sampler": "random",
            "trials": 4,
            "parallel": 2,
            "vectorize": False,  # trial by trial: units of two, one after the other (no refill)
            "objective": {"metric": "val_accuracy", "mode": "max"},
        },
    )
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + 90
    while True:  # the first unit ended, the second is training
        first = service.http.get(f"/v1/sweeps/{sweep_id}").json()
        if any(t["unit"] == 1 and t["status"] == "running" for t in first["trials"]):
            break
        assert time.monotonic() < deadline and first["status"] in {"queued", "running"}, first
        time.sleep(0.05)
    for proc in service.workers:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    service.start_worker()
    deadline = time.monotonic() + 150
    while (done := service.http.get(f"/v1/sweeps/{sweep_id}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, done
        time.sleep(0.3)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    by_index = {t["index"]: t for t in done["trials"]}
    for i in (0, 1):  # the first unit's trials were kept, not trained again
        assert (
            by_index[i]["finished_at"] == next(t for t in first["trials"] if t["index"] == i)["finished_at"]
        )
    # the lost unit went to the new worker, which trained its trials (the same trials of the
    # study, not new ones) once, to their end
    lost = [t["index"] for t in done["trials"] if t["unit"] == 1]
    unit = next(u for u in done["units"] if u["index"] == 1)
    new_worker = f"{first['units'][1]['worker'].rsplit(':', 1)[0]}:{service.workers[-1].pid}"
    assert lost == unit["trials"] and unit["attempts"] == 2 and unit["worker"] == new_worker
    assert all(by_index[i]["status"] == "succeeded" and by_index[i]["worker"] == new_worker for i in lost)
    assert all(by_index[i]["epochs_trained"] == 12 for i in lost)
    assert len(done["trials"]) == 4 and sum(t["status"] == "succeeded" for t in done["trials"]) == 4
    study = optuna.load_study(study_name=done["study"]["name"], storage=done["study"]["storage"])
    assert {t.number: t.state.name for t in study.trials} == dict.fromkeys(range(4), "COMPLETE")
    for i in lost:  # the study and the curve agree on every epoch, the first attempt's included
        curve = dict(by_index[i]["curve"])
        assert list(curve) == list(range(1, 13))
        assert study.trials[i].intermediate_values == pytest.approx(curve, abs=1e-6)


def test_a_cancelled_search_leaves_no_trial_running_in_its_study(service: Service) -> None:
    if service.backend != "embedded":
        pytest.skip("once is enough: the study's ending is the worker's, not the backend's")
    slow = {**BASE, "model": {"type": "mlp", "hidden": [64]}, "training": {"epochs": 40, "batch_size": 32}}
    r = service.http.post(
        "/v1/sweeps",
        json={
            "base": {**slow, "training": {**slow["training"], "device": "cpu"}},
            "space": {"regularization.l2": {"log_uniform": [1e-6, 1e-2]}},
            "sampler": "random",
            "trials": 4,
            "parallel": 2,
            "objective": {"metric": "val_accuracy", "mode": "max"},
        },
    )
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + 90
    while not any(
        (t.get("progress") or {}).get("step")
        for t in service.http.get(f"/v1/sweeps/{sweep_id}").json()["trials"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert service.http.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 202
    deadline = time.monotonic() + 60
    while (sweep := service.http.get(f"/v1/sweeps/{sweep_id}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, sweep
        time.sleep(0.2)
    assert sweep["status"] == "cancelled"
    study = optuna.load_study(study_name=sweep["study"]["name"], storage=sweep["study"]["storage"])
    assert study.trials and not [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in study.trials:  # every trial asked (both units') ended FAIL, saying why
        assert t.state == optuna.trial.TrialState.FAIL and "cancelled" in t.user_attrs["regtrain_end"]
        assert {x["index"]: x["status"] for x in sweep["trials"]}[t.number] == "cancelled"
