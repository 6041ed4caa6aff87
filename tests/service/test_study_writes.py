"""A search's trials and reports written in bulk into Optuna's tables (service/store/studies.py),
on both backends: what optuna.load_study reads back is what Optuna's own storage would have
written (numbers, params, the sampler's attrs, intermediate values, how each ended, a pruned
one with its last value), a trial the study holds ended takes no report and no second end, and
the first value reported at a step is kept. The tables it writes
are Optuna's, column for column."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution, distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import TrialState

from service.contract.search_space import study_name
from service.contract.sweep_spec import SweepSpec
from service.store import open_store
from service.store.studies import (
    NewTrial,
    StudyWrites,
    trial_intermediate_values,
    trial_params,
    trial_system_attributes,
    trial_values,
    trials,
)
from worker.search import open_study, storage

DOC = {
    "base": {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 3}},
    "space": {"regularization.l2": {"log_uniform": [1e-6, 1e-2]}},
    "trials": 4,
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


@pytest.mark.parametrize(
    ("table", "model"),
    [
        (trials, models.TrialModel),
        (trial_params, models.TrialParamModel),
        (trial_system_attributes, models.TrialSystemAttributeModel),
        (trial_intermediate_values, models.TrialIntermediateValueModel),
        (trial_values, models.TrialValueModel),
    ],
)
def test_the_tables_are_optunas(table: object, model: type) -> None:
    theirs = model.__table__  # type: ignore[attr-defined]
    ours = table
    assert ours.name == theirs.name  # type: ignore[attr-defined]
    assert {c.name for c in ours.columns} == {c.name for c in theirs.columns}  # type: ignore[attr-defined]
    for c in ours.columns:  # type: ignore[attr-defined]
        enums = getattr(theirs.columns[c.name].type, "enums", None)
        assert getattr(c.type, "enums", None) == enums and getattr(c.type, "name", None) == getattr(
            theirs.columns[c.name].type, "name", None
        )


def test_trials_and_reports_read_back_as_optuna_wrote_them(store_url: str) -> None:
    store = open_store(store_url)  # regtrain's tables and Optuna's, as in a worker
    try:
        st = storage(store_url)
        sweep = SweepSpec.model_validate(DOC)
        study = open_study(sweep, "sw-bulk", st)
        study.tell(study.ask({"regularization.l2": FloatDistribution(1e-6, 1e-2, log=True)}), 0.5)  # Optuna's
        study_id = st.get_study_id_from_name(study_name("sw-bulk"))
        writes = StudyWrites(st.engine)
        dist = FloatDistribution(1e-6, 1e-2, log=True)
        new = [
            NewTrial({"regularization.l2": (dist.to_internal_repr(v), distribution_to_json(dist))}, attrs)
            for v, attrs in ((1e-3, {"grid_id": json.dumps(3)}), (1e-4, {}))
        ]
        written = writes.add_trials(study_id, new)
        assert [n for _, n in written] == [1, 2]  # after Optuna's own trial 0
        (a, _), (b, _) = written
        assert writes.report([(a, 1, 0.6), (a, 2, 0.7), (b, 1, 0.4)]) == {a, b}
        writes.report([(a, 2, 0.9), (a, 3, 0.8)])  # step 2 keeps its first value
        assert writes.finish(b, "PRUNED", None)  # its value: its last reported one, as Study.tell
        assert writes.report([(b, 2, 0.1)]) == set()  # ended: takes none
        assert not writes.finish(b, "FAIL", None)  # ended already: left as it was
        c, _ = writes.add_trials(study_id, new[:1])[0]
        assert writes.finish(c, "COMPLETE", [0.75])

        got = optuna.load_study(study_name=study_name("sw-bulk"), storage=store_url).trials
        assert [t.number for t in got] == [0, 1, 2, 3]
        assert [t.state for t in got] == [
            TrialState.COMPLETE,
            TrialState.RUNNING,
            TrialState.PRUNED,
            TrialState.COMPLETE,
        ]
        assert [t.value for t in got] == [0.5, None, 0.4, 0.75]
        assert got[2].datetime_complete is not None and got[3].datetime_complete is not None
        assert got[1].params == {"regularization.l2": pytest.approx(1e-3)} and got[1].distributions == {
            "regularization.l2": dist
        }
        assert got[1].system_attrs == {"grid_id": 3} and got[2].system_attrs == {}
        assert got[1].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.8}
        assert got[2].intermediate_values == {1: 0.4}
        assert got[1].datetime_start is not None
        # what a unit's copy of the study reads of it (worker/search.py Mirror): all of it,
        # then only the trials above an id and those it holds running
        read = writes.trials(study_id, 0, [])
        assert [(t.number, t.state, t.values) for t in read] == [
            (0, "COMPLETE", [0.5]),
            (1, "RUNNING", None),
            (2, "PRUNED", [0.4]),
            (3, "COMPLETE", [0.75]),
        ]
        assert read[2].last == (1, 0.4) and read[1].last is None  # a running one's: not read
        assert read[1].params == new[0].params and read[1].system_attrs == {"grid_id": "3"}
        assert [t.number for t in writes.trials(study_id, b, [a])] == [1, 3]
        # Optuna numbers the next trial it makes itself after these
        assert study.ask().number == 4
    finally:
        storage(store_url).engine.dispose()
        storage.cache_clear()
        store.engine.dispose()
