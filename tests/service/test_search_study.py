"""What a search sweep's Optuna study says of trials whose unit did not end them itself: a sweep
that ended (cancelled, failed) ends the trials still running there, with the reason in a user
attr, and a unit trained again after its worker died leaves the study's intermediate values and
regtrain's curve in agreement. On a real SQLite store with the study in it, through
optuna.load_study, as a user would open it; no torch (the engine's epochs are reported by hand)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from service.contract.search_space import study_name
from service.contract.sweep_spec import SweepSpec
from service.store import Repository, open_store
from service.store.sweep_units import SweepUnits
from worker.search import END_ATTR, UnitSearch, ask, end_running_trials, open_study, storage

DOC: dict[str, Any] = {
    "base": {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 3}},
    "space": {"regularization.l2": {"log_uniform": [1e-6, 1e-2]}},
    "sampler": "random",
    "trials": 4,
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(url: str) -> Iterator[Repository]:
    store = open_store(url)
    yield store
    store.engine.dispose()


def _search(store: Repository, url: str, n: int) -> tuple[SweepSpec, str, SweepUnits, str, list[int]]:
    """A running search sweep with one unit of `n` trials asked from its study."""
    sweep = SweepSpec.model_validate(DOC)
    sweep_id = store.create_sweep(tenant="t", spec=DOC, queue="cpu", trials=[])["id"]
    assert store.claim_sweep(sweep_id, "coordinator", 60, 3) is not None
    units = SweepUnits(store.engine)
    good, bad = ask(open_study(sweep, sweep_id, storage(url)), storage(url), sweep, n)
    assert not bad
    [unit] = units.add(sweep_id, "coordinator", "cpu", [sorted(good)], good) or []
    return sweep, sweep_id, units, unit, sorted(good)


def test_an_ended_sweep_ends_the_trials_still_running_in_its_study(store: Repository, url: str) -> None:
    _, sweep_id, _, _, numbers = _search(store, url, 3)
    study = optuna.load_study(study_name=study_name(sweep_id), storage=url)
    study.tell(numbers[0], 0.9)  # its unit told this one
    why = "cancelled: the sweep was cancelled before this trial ended"
    assert end_running_trials(sweep_id, url, why) == 2
    trials = optuna.load_study(study_name=study_name(sweep_id), storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert END_ATTR not in trials[0].user_attrs
    assert [t.user_attrs[END_ATTR] for t in trials[1:]] == [why, why]
    assert end_running_trials(sweep_id, url, why) == 0  # nothing left running
    assert end_running_trials("never-asked", url, why) == 0  # a sweep with no study yet


def test_a_retried_units_curve_and_study_hold_the_same_values(store: Repository, url: str) -> None:
    sweep, sweep_id, units, unit, [number] = _search(store, url, 1)

    def attempt(owner: str, lease_s: float, values: list[tuple[int, float]]) -> None:
        """One worker's attempt at the unit, as worker/unit_task.py drives it, epoch by epoch."""
        claim = units.claim(unit, owner, lease_s, 3)
        assert claim is not None and claim.todo == (number,)
        search = UnitSearch.load(sweep, sweep_id, url, list(claim.todo))
        for step, value in values:
            search.on_epoch(number, 0, step, {"val_accuracy": value})
            search.flush()  # the unit's after_epoch
            units.progress(unit, owner, sweep_id, {number: {"step": step, "value": value}})

    attempt("dead", 0.2, [(1, 0.5), (2, 0.6)])
    time.sleep(0.4)  # its worker died: the lease lapsed
    assert units.reap(3, 3600) == [(unit, "cpu")]
    # The retry trains the trial from its first epoch again (here with values a little off).
    attempt("alive", 60, [(1, 0.51), (2, 0.61), (3, 0.7)])
    [trial] = store.trials([sweep_id])[sweep_id]
    study = optuna.load_study(study_name=study_name(sweep_id), storage=url)
    assert trial["curve"] == [[1, 0.5], [2, 0.6], [3, 0.7]]
    assert study.trials[number].intermediate_values == {s: v for s, v in trial["curve"]}


def test_a_sweep_the_reaper_ends_ends_its_studys_running_trials(
    store: Repository, url: str, tmp_path: Path
) -> None:
    from service.queue.broker import make_celery
    from service.settings import Settings
    from worker.runtime import Runtime

    sweep = SweepSpec.model_validate(DOC)
    sweep_id = store.create_sweep(tenant="t", spec=DOC, queue="cpu", trials=[])["id"]
    assert store.claim_sweep(sweep_id, "coordinator", 0.2, 3) is not None
    good, _ = ask(open_study(sweep, sweep_id, storage(url)), storage(url), sweep, 2)
    assert SweepUnits(store.engine).add(sweep_id, "coordinator", "cpu", [sorted(good)], good)
    assert store.cancel_sweep(sweep_id) == "requested"  # and then its coordinator died
    time.sleep(0.4)
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    Runtime(settings).reap_once(make_celery(settings))
    assert store.get_sweep(sweep_id)["status"] == "cancelled"  # type: ignore[index]
    trials = optuna.load_study(study_name=study_name(sweep_id), storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("stopped answering" in t.user_attrs[END_ATTR] for t in trials)


def test_a_units_copy_of_the_study_follows_it_from_ask_to_ask(store: Repository, url: str) -> None:
    """The in-memory study a unit's sampler proposes in (worker/search.py Mirror) holds what
    the study holds at each ask: trials other units asked, and how each ended, a pruned one
    with its last value (all a sampler reads of a curve); one whose numbers part from the
    study's is made afresh."""
    from worker.search import Mirror

    sweep = SweepSpec.model_validate({**DOC, "trials": 8})
    st = storage(url)
    study = open_study(sweep, "sw-mirror", st)
    search = UnitSearch.load(sweep, "sw-mirror", url, [])
    mine, _ = search.ask(2)
    theirs, _ = ask(open_study(sweep, "sw-mirror", st), st, sweep, 2)  # another unit's
    a, b = sorted(mine)
    c, d = sorted(theirs)
    for step, value in ((1, 0.5), (2, 0.4)):
        search.on_epoch(a, 0, step, {"val_accuracy": value})
    search.flush()
    study.tell(a, state=TrialState.PRUNED)
    study.tell(c, 0.9)
    study.tell(d, state=TrialState.FAIL)
    more, _ = search.ask(1)
    copied = search.mirror.copy.get_trials(deepcopy=False)
    held = study.get_trials(deepcopy=False)
    assert [t.number for t in copied] == [t.number for t in held] == sorted([a, b, c, d, *more])
    assert [t.state for t in copied] == [t.state for t in held]
    assert [t.values for t in copied] == [t.values for t in held]  # the pruned one: its last value
    assert [t.params for t in copied] == [t.params for t in held]
    assert copied[a].intermediate_values == {2: 0.4}
    mirror = Mirror(study, search.study_id, search.writes)
    mirror.sync()
    assert [t.number for t in mirror.copy.get_trials()] == [t.number for t in held]
    mirror.asked([5], [(99, 6)])  # another unit's trial took number 5 meanwhile
    assert mirror.states == [] and mirror.copy.get_trials() == []
