"""How a sweep ends, without training: a unit that failed `internal` fails the sweep naming the
unit (its coordinator never returns "succeeded"), on SQLite and PostgreSQL; the grid sampler
asked for each combination once tells every trial without Optuna's Study.stop error; and a
worker refuses, untrained, the trials over its own caps (over_limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.errors import ErrorType
from service.contract.search_space import trial_spec
from service.contract.sweep_outcome import internal_failure
from service.contract.sweep_spec import SweepSpec, Trial, clamped
from service.settings import Settings
from service.store import open_store
from service.submission.sweeps import trials_over_caps

GRID: dict[str, Any] = {
    "base": {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}},
    "grid": {"regularization.l2": [0.0, 0.1, 0.2, 0.3]},
}


def test_internal_failure_names_the_unit_or_the_trial() -> None:
    ok = {"unit_index": 0, "status": "succeeded", "error": None}
    lost = {"unit_index": 1, "status": "failed", "error": {"type": "worker_lost", "message": "x"}}
    bug = {"unit_index": 2, "status": "failed", "error": {"type": "internal", "message": "KeyError: 'a'"}}
    assert internal_failure([ok, lost]) is None  # a lost worker's trials failed as trials do
    assert internal_failure([ok, lost, bug]) == {
        "type": ErrorType.INTERNAL, "message": "unit 2 failed internally: KeyError: 'a'"
    }  # fmt: skip
    trial = {
        "trial_index": 5,
        "unit": 1,
        "status": "failed",
        "error": {"type": "internal", "message": "boom"},
    }
    error = internal_failure([ok], [trial])
    assert error is not None and error["message"].startswith("trial 5 (unit 1) failed internally")


def test_a_coordinator_with_an_internally_failed_unit_fails_the_sweep(store_url: str, tmp_path: Path) -> None:
    from worker.coordinator import coordinate
    from worker.runtime import Runtime
    from worker.training.errors import TrainingError

    rt = Runtime(Settings(data_dir=tmp_path, database_url=store_url))
    sweep = SweepSpec.model_validate(GRID)
    row = rt.store.create_sweep(tenant="t", spec=GRID, queue="cpu", trials=[{"l2": i} for i in range(4)])
    assert rt.store.claim_sweep(row["id"], rt.name, 60, 3) is not None
    first, second = rt.units.add(row["id"], rt.name, "cpu", [[0, 1], [2, 3]]) or []
    for unit, status, error in (
        (first, "succeeded", None),
        (second, "failed", {"type": "internal", "message": "RuntimeError: Study.stop"}),
    ):
        assert rt.units.claim(unit, "other", 60, 3) is not None
        assert rt.units.finish(unit, "other", status, error=error)
    with pytest.raises(TrainingError) as e:
        coordinate(rt, sweep, row["id"], "cpu", lambda: False, lambda u, q: None)
    assert e.value.type == ErrorType.INTERNAL and e.value.message.startswith("unit 1 failed internally")
    assert "Study.stop" in e.value.message
    rt.store.engine.dispose()


def test_the_grid_sampler_asks_each_combination_once_and_tells_the_last_without_error(tmp_path: Path) -> None:
    from worker.search import ask, open_study, storage

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)  # regtrain's tables and Optuna's, as in a worker
    doc = {**GRID, "grid": None, "space": {"optimizer.name": {"choice": ["adam", "sgd"]},
                                           "training.batch_size": {"int": [8, 9]}},
           "sampler": "grid", "trials": 8}  # fmt: skip
    sweep, warnings = clamped(SweepSpec.model_validate(doc))
    assert sweep.trials == 4 and warnings
    study = open_study(sweep, "sw-grid", storage(url))
    good, bad = ask(study, storage(url), sweep, sweep.trials)
    assert not bad
    combos = {(p["optimizer.name"], p["training.batch_size"]) for p in good.values()}
    assert combos == {("adam", 8), ("adam", 9), ("sgd", 8), ("sgd", 9)}  # each once
    for number in good:  # Optuna's sampler would call Study.stop at the last: RuntimeError
        study.tell(number, 0.5)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    store.engine.dispose()


def test_a_worker_refuses_the_trials_over_its_own_caps_untrained() -> None:
    sweep = SweepSpec.model_validate({**GRID, "grid": {"model.hidden": [[4], [400]]}})
    params = [{"model.hidden": [4]}, {"model.hidden": [400]}]  # 35 and 3,203 parameters on iris
    trials = [Trial(i, p, trial_spec(sweep, p)) for i, p in enumerate(params)]
    iris = BUILTIN_SHAPES["iris"]
    over = trials_over_caps(trials, iris, Settings(max_parameters=1_000))
    assert list(over) == [1] and over[1]["type"] == ErrorType.OVER_LIMIT
    assert over[1]["message"] == (
        "not trained: model: 3,203 parameters exceed the limit of 1,000 (this worker's limits)"
    )
    assert trials_over_caps(trials, iris, Settings()) == {}
    work = trials_over_caps(trials, iris, Settings(max_epoch_samples=100))  # 20 epochs × 150 samples
    assert {e["type"] for e in work.values()} == {ErrorType.OVER_LIMIT} and len(work) == 2
    assert "training.epochs" in work[0]["message"]


def test_within_caps_ends_the_over_cap_trials_through_on_trial_and_keeps_the_rest(tmp_path: Path) -> None:
    """What a unit's worker and a path's coordinator run before training: an uploaded dataset's
    shape read from the store, as the API read it."""
    from service.store.sweeps import SweepClaim
    from worker.runtime import Runtime
    from worker.unit_task import within_caps

    rt = Runtime(Settings(data_dir=tmp_path, max_parameters=1_000))
    rt.store.create_dataset(
        dataset_id="ds-1", tenant="t", name="d", task="classification", n_samples=100,
        n_features=4, n_classes=3, sha256="0" * 64, size_bytes=10,
    )  # fmt: skip
    doc = {**GRID, "base": {**GRID["base"], "dataset": {"id": "ds-1"}}, "grid": None,
           "path": {"regularization.l2": [0.1, 0.01]}}  # fmt: skip
    sweep = SweepSpec.model_validate(doc)
    wide = SweepSpec.model_validate(
        {**doc, "base": {**doc["base"], "model": {"type": "mlp", "hidden": [400]}}}
    )
    claim = SweepClaim("sw-1", "t", doc, 1)
    told: list[Any] = []
    chain = [Trial(i, p, trial_spec(sweep, p)) for i, p in enumerate([{"regularization.l2": 0.1}])]
    assert within_caps(rt, claim, sweep, chain, told.append) == chain and told == []
    over = [Trial(0, {"regularization.l2": 0.1}, trial_spec(wide, {"regularization.l2": 0.1}))]
    assert within_caps(rt, claim, wide, over, told.append) == []
    (outcome,) = told
    assert outcome.status == "failed" and outcome.error["type"] == ErrorType.OVER_LIMIT
    assert outcome.epochs_trained == 0
    rt.store.engine.dispose()
