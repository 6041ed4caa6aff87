"""A search's space, pruner and selection, without a worker: the 422s of a bad space (each
naming its field), the corners the API checks, the conditional fields, the pruning rules and
glmnet's one-standard-error rule."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.contract import selection
from service.contract.search_space import Dimension, Pruner, edge_warnings, probe_params, study_storage
from service.contract.sweep_spec import SweepSpec
from worker.pruning import GapRule, RungRule

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 4},
}
SPACE: dict[str, Any] = {
    "regularization.l2": {"log_uniform": [1e-6, 0.1]},
    "model.dropout": {"uniform": [0.0, 0.6]},
    "optimizer.name": {"choice": ["adam", "sgd"]},
    "optimizer.momentum": {"uniform": [0.0, 0.99], "when": {"optimizer.name": "sgd"}},
    "training.batch_size": {"int": [32, 256]},
}
SEARCH: dict[str, Any] = {
    "base": BASE,
    "sampler": "tpe",
    "space": SPACE,
    "trials": 32,
    "pruner": {"type": "asha", "grace_epochs": 3, "reduction_factor": 3, "min_trials": 4},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "cv_folds": 5,
    "seeds": 1,
    "select": "best",
}


def test_api_md_example_is_accepted_and_stored_as_sent(client: TestClient) -> None:
    r = client.post("/v1/sweeps", json=SEARCH)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["trials"] == [] and doc["units"] == [] and doc["warnings"] == []
    assert doc["study"]["name"].endswith(doc["id"]) and doc["study"]["storage"].startswith("sqlite:///")
    space = doc["spec"]["space"]
    assert space["training.batch_size"]["int"] == [32, 256]
    assert space["optimizer.momentum"]["when"] == {"optimizer.name": "sgd"}
    assert SweepSpec.model_validate(doc["spec"]).space == SweepSpec.model_validate(SEARCH).space


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"space": {"regularization.l3": {"uniform": [0, 1]}}}, "regularization.l3"),
        ({"space": {"regularization.l2": {"log_uniform": [0, 1]}}}, "log_uniform"),
        ({"space": {"regularization.l2": {"uniform": [1, 0]}}}, "low must not exceed high"),
        ({"space": {"regularization.l2": {"uniform": [0, 1], "choice": [1]}}}, "exactly one of"),
        ({"space": {"model.dropout": {"uniform": [0.0, 1.5]}}}, "model.dropout"),
        (
            {"space": {"optimizer.momentum": {"uniform": [0, 1], "when": {"optimizer.name": "sgd"}}}},
            "not a field of the space",
        ),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "select": "one_se"}, "one_se"),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "sampler": "grid"}, "grid sampler"),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "sampler": "bayes"}, "sampler"),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "pruner": {"type": "sometimes"}}, "pruner"),
        (
            {
                "space": {"model.dropout": {"uniform": [0, 0.5]}},
                "pruner": {"type": "asha", "grace_epochs": 0},
            },
            "grace_epochs",
        ),
        (
            {"space": None, "grid": {"regularization.l2": [0, 1e-3]}, "sampler": "tpe"},
            "sampler and pruner go with a space",
        ),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "seeds": 11}, "seeds"),
        (
            {
                "space": None,
                "grid": {"regularization.l2": [0, 1e-3]},
                "sampler": None,
                "pruner": {},
                "select": "one_se",
                "cv_folds": 0,
            },
            "cv_folds ≥ 2 or seeds ≥ 2",
        ),
    ],
)
def test_a_bad_search_is_422_naming_it(client: TestClient, change: dict[str, Any], words: str) -> None:
    r = client.post("/v1/sweeps", json={**SEARCH, **change})
    assert r.status_code == 422 and words in r.text, r.text
    assert client.get("/v1/sweeps").json()["sweeps"] == []


def test_probes_reach_every_corner_and_conditions_hold() -> None:
    space = {k: Dimension.model_validate(v) for k, v in SPACE.items()}
    probes = probe_params(space)
    for p in probes:
        assert ("optimizer.momentum" in p) == (p["optimizer.name"] == "sgd")
    assert {p["optimizer.momentum"] for p in probes if "optimizer.momentum" in p} >= {0.0, 0.99}
    assert {p["training.batch_size"] for p in probes} == {32, 256}
    assert {p["regularization.l2"] for p in probes} == {1e-6, 0.1}


def test_asha_rungs_keep_the_best_fraction_after_min_trials() -> None:
    rule = RungRule(Pruner(type="asha", grace_epochs=2, reduction_factor=2, min_trials=3), True, 12)
    for i, v in enumerate([0.9, 0.5, 0.8, 0.7]):
        rule.report(i, 2, v)
    assert rule.check(0, 1) is None  # before the grace period
    assert rule.check(0, 2) is None and rule.check(2, 2) is None  # the best 4 // 2
    assert "ranked 4 of the 4" in (rule.check(1, 2) or "")
    assert rule.check(3, 2) is not None
    assert rule.check(0, 3) is None  # not a rung: 2, 4, 8
    lone = RungRule(Pruner(type="asha", grace_epochs=2, reduction_factor=2, min_trials=3), False, 12)
    lone.report(0, 2, 9.0)
    lone.report(1, 2, 1.0)
    assert lone.check(0, 2) is None  # fewer than min_trials reached it
    hb = RungRule(Pruner(type="hyperband", grace_epochs=1, reduction_factor=3, min_trials=1), True, 9)
    assert hb.brackets == 3 and {hb.bracket(i) for i in range(6)} == {0, 1, 2}


def test_the_gap_rule_stops_a_widening_gap_after_the_grace_period() -> None:
    rule = GapRule(Pruner(type="gap", grace_epochs=3, patience=2))
    gaps = [0.1, 0.2, 0.3, 0.4]
    reasons = [rule.check(0, 0, e + 1, {"generalization_gap": g}) for e, g in enumerate(gaps)]
    assert reasons[:2] == [None, None] and reasons[2] is not None and "widened 2 epochs" in reasons[2]
    steady = GapRule(Pruner(type="gap", grace_epochs=1, patience=2))
    assert all(
        steady.check(0, 0, e + 1, {"generalization_gap": g}) is None
        for e, g in enumerate([0.3, 0.2, 0.25, 0.1])
    )


def _row(i: int, l2: float, scores: list[float]) -> dict[str, Any]:
    return {
        "trial_index": i,
        "params": {"regularization.l2": l2},
        "score": sum(scores) / len(scores),
        "fold_scores": scores,
    }


def test_one_se_takes_the_strongest_lambda_within_one_standard_error() -> None:
    rows = [
        _row(0, 0.0, [0.90, 0.94]),
        _row(1, 1e-3, [0.91, 0.95]),
        _row(2, 1e-2, [0.90, 0.93]),
        _row(3, 0.1, [0.5, 0.6]),
    ]
    spec = {
        "grid": {"regularization.l2": [0, 1e-3, 1e-2, 0.1]},
        "objective": {"mode": "max"},
        "select": "one_se",
    }
    ranked = sorted(rows, key=lambda r: -r["score"])
    assert selection.choose({**spec, "select": "best"}, ranked) == 1
    assert selection.choose(spec, ranked) == 2  # 0.915 ≥ 0.93 − 0.02
    path = {
        "path": {"regularization.l2": [0.1, 1e-2, 1e-3, 0]},
        "objective": {"mode": "max"},
        "select": "one_se",
    }
    path_rows = [{**r, "trial_index": 3 - r["trial_index"]} for r in rows]
    assert selection.choose(path, sorted(path_rows, key=lambda r: -r["score"])) == 1  # the strongest first
    assert selection.warnings(spec, rows[3]) and not selection.warnings(spec, rows[1])


def test_edge_warnings_and_a_storage_url_without_password() -> None:
    space = {"regularization.l2": Dimension.model_validate({"log_uniform": [1e-6, 0.1]})}
    assert "high end" in edge_warnings(space, {"regularization.l2": 0.09})[0]
    assert edge_warnings(space, {"regularization.l2": 1e-3}) == []
    assert (
        study_storage("postgresql+psycopg://rt:secret@db:5432/regtrain")
        == "postgresql+psycopg://rt@db:5432/regtrain"
    )


def test_several_objectives_report_the_pareto_front(client: TestClient) -> None:
    two = [{"metric": "val_accuracy", "mode": "max"}, {"metric": "weight_sparsity", "mode": "max"}]
    r = client.post(
        "/v1/sweeps", json={**SEARCH, "objective": two, "pruner": {"type": "none"}, "sampler": "nsga2"}
    )
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["objectives"] == two and doc["objective"] == two[0] and doc["pareto"] == []
    r = client.post("/v1/sweeps", json={**SEARCH, "objective": two})  # ASHA judges one objective
    assert r.status_code == 422 and "pruner" in r.text
    r = client.post("/v1/sweeps", json={**SEARCH, "objective": [two[0], {"metric": "val_r2"}], "pruner": {}})
    assert r.status_code == 422 and ["body", "objective", 1, "metric"] in [
        e["loc"] for e in r.json()["detail"]
    ]

    def trial(i: int, acc: float, sparsity: float, status: str = "succeeded") -> dict[str, Any]:
        return {
            "trial_index": i,
            "status": status,
            "metrics": {"val_accuracy": acc, "weight_sparsity": sparsity},
        }

    trials = [
        trial(0, 0.9, 0.1),
        trial(1, 0.8, 0.5),
        trial(2, 0.85, 0.05),
        trial(3, 0.95, 0.0),
        trial(4, 0.99, 0.9, "pruned"),
    ]
    assert selection.pareto({"objective": two}, trials) == [0, 1, 3]
