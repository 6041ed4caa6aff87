"""A finished sweep's parameter importances (worker/importance.py): Optuna's fANOVA over the
succeeded trials' scores, on the space's scale, at most MAX_TRIALS trials weighed; kept on the
sweep row by its lease owner only and served in the sweep document."""

from __future__ import annotations

import math
import random
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from service.contract.documents import sweep_document
from service.contract.sweep_spec import SweepSpec
from service.store import Repository
from worker import importance
from worker.importance import distributions, param_importances

BASE = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [8]}}
SPACE = {
    "regularization.l1": {"log_uniform": [1e-6, 1e-2]},
    "regularization.l2": {"log_uniform": [1e-6, 1e-1]},
    "model.dropout": {"uniform": [0.0, 0.5]},
}


def _search(trials: int = 40, **space: Any) -> SweepSpec:
    return SweepSpec.model_validate({"base": BASE, "space": space or SPACE, "trials": trials})


def _rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Trials whose score is driven by l2 (on its log scale), a little by dropout, not by l1."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p = {
            "regularization.l1": 10 ** rng.uniform(-6, -2),
            "regularization.l2": 10 ** rng.uniform(-6, -1),
            "model.dropout": rng.uniform(0, 0.5),
        }
        score = 0.9 - 0.1 * (6 + math.log10(p["regularization.l2"])) - 0.05 * p["model.dropout"]
        rows.append(
            {"trial_index": i, "status": "succeeded", "params": p, "score": score + rng.gauss(0, 1e-3)}
        )
    return rows


def test_the_field_that_drives_the_score_ranks_first() -> None:
    found = param_importances(_search(), _rows(40))
    assert found is not None
    assert next(iter(found)) == "regularization.l2" and found["regularization.l2"] > 0.8
    assert set(found) == set(SPACE)
    assert abs(sum(found.values()) - 1) < 1e-6
    assert list(found.values()) == sorted(found.values(), reverse=True)


def test_pruned_failed_and_unscored_trials_are_not_weighed() -> None:
    rows = _rows(10)
    for r in rows[2:]:
        r["status"] = "pruned"
    rows.append({"trial_index": 10, "status": "failed", "params": rows[0]["params"], "score": None})
    found = param_importances(_search(), rows)
    assert found is not None  # two succeeded trials are enough
    for r in rows[1:]:
        r["status"] = "failed"
    assert param_importances(_search(), rows) is None  # one is not


def test_nothing_to_weigh_gives_none() -> None:
    same = [{**r, "score": 0.5} for r in _rows(5)]
    assert param_importances(_search(), same) is None
    fixed = [{**r, "params": {"regularization.l2": 0.01}} for r in _rows(5)]
    grid = SweepSpec.model_validate({"base": BASE, "grid": {"regularization.l2": [0.01]}})
    assert param_importances(grid, fixed) is None


def test_at_most_max_trials_are_weighed(monkeypatch: Any) -> None:
    monkeypatch.setattr(importance, "MAX_TRIALS", 20)
    rows = _rows(30)
    for r in rows[20:]:  # beyond the bound: a field only they have, which would matter a lot
        r["params"]["training.lr"] = r["score"]
    found = param_importances(_search(), rows)
    assert found is not None and "training.lr" not in found


def test_distributions_follow_the_space_or_the_values_trials_took() -> None:
    space = _search(
        **{
            "regularization.l2": {"log_uniform": [1e-6, 1e-1]},
            "training.batch_size": {"int": [16, 64]},
            "optimizer.name": {"choice": ["adam", "sgd"]},
        }
    )
    d = distributions(
        space, [{"regularization.l2": 1e-3, "training.batch_size": 32, "optimizer.name": "sgd"}]
    )
    assert d["regularization.l2"] == FloatDistribution(1e-6, 1e-1, log=True)
    assert d["training.batch_size"] == IntDistribution(16, 64)
    assert d["optimizer.name"] == CategoricalDistribution(["adam", "sgd"])
    grid = SweepSpec.model_validate(
        {"base": BASE, "grid": {"regularization.l2": [0, 1e-3, 1e-1], "model.dropout": [0.1, 0.3]}}
    )
    params = [{"regularization.l2": a, "model.dropout": b} for a in (0, 1e-3, 1e-1) for b in (0.1, 0.3)]
    d = distributions(grid, params)
    assert d["regularization.l2"] == FloatDistribution(0, 0.1)  # a 0: linear
    assert d["model.dropout"] == FloatDistribution(0.1, 0.3)
    d = distributions(grid, [{"regularization.l2": 1e-4}, {"regularization.l2": 1e-1}])
    assert d["regularization.l2"] == FloatDistribution(1e-4, 0.1, log=True)  # ×1000: logs


def test_the_sweep_keeps_them_once_its_owner_writes_them(store: Repository) -> None:
    trials = [{"regularization.l2": 0.1}, {"regularization.l2": 0.01}]
    spec = {"name": "s", "base": BASE, "grid": {"regularization.l2": [0.1, 0.01]}}
    sweep_id = store.create_sweep(tenant="t", spec=spec, queue="cpu", trials=trials)["id"]
    assert store.claim_sweep(sweep_id, "w1", 30, 3) is not None
    assert not store.set_param_importances(sweep_id, "w2", {"regularization.l2": 1.0})
    doc = sweep_document(store.get_sweep(sweep_id), store.trials([sweep_id])[sweep_id], None)
    assert doc["param_importances"] is None
    found = {"regularization.l2": 0.7, "model.dropout": 0.2, "regularization.l1": 0.1}
    assert store.set_param_importances(sweep_id, "w1", found)
    doc = sweep_document(store.get_sweep(sweep_id), store.trials([sweep_id])[sweep_id], None)
    assert list(doc["param_importances"].items()) == list(found.items())  # most important first
