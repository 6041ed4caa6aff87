"""The SweepSpec contract (no torch): expansion of grid, random and path searches into validated
trials, the refusals that name the problem, which trials may stack, and the winner's retraining
spec."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pytest
from engine_helpers import BASE, make_spec, merge
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.errors import SpecError
from service.contract.stacking import group_key, not_stackable, vectorize_refusal
from service.contract.sweep_spec import MAX_TRIALS, SweepSpec, best_job_spec, expand

IRIS = BUILTIN_SHAPES["iris"]
MAX_PARAMETERS = 10_000_000


def sweep(**parts: Any) -> SweepSpec:
    """A SweepSpec over engine_helpers.BASE (base parts merged in from `base`)."""
    base = merge(BASE, parts.pop("base", {}))
    return SweepSpec.model_validate({"base": base, **parts})


def trials_of(**parts: Any) -> list[Any]:
    return expand(sweep(**parts), IRIS, MAX_PARAMETERS)


# --- grid -------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_order() -> None:
    l2s, dropouts, lrs = [0.0, 1e-4, 1e-2], [0.0, 0.5], [0.01, 0.1]
    trials = trials_of(grid={"regularization.l2": l2s, "model.dropout": dropouts, "optimizer.lr": lrs})
    expected = list(itertools.product(l2s, dropouts, lrs))
    assert len(trials) == len(expected) == 12
    for i, (t, (l2, p, lr)) in enumerate(zip(trials, expected, strict=True)):
        assert t.index == i
        assert t.params == {"regularization.l2": l2, "model.dropout": p, "optimizer.lr": lr}
        assert t.spec.regularization.l2 == l2
        assert t.spec.model.dropout == p
        assert t.spec.optimizer.lr == lr
        # everything else is the base's
        assert t.spec.model.hidden == [16]
        assert t.spec.optimizer.momentum == 0.9
        assert t.spec.training.epochs == BASE["training"]["epochs"]


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["regularization.l1", "regularization.l2", "optimizer.lr", "model.dropout"]),
        st.lists(st.sampled_from([0.001, 0.01, 0.1, 0.2]), min_size=1, max_size=4),
        min_size=1,
    )
)
def test_any_grid_expands_to_its_product(grid: dict[str, list[float]]) -> None:
    trials = trials_of(grid=grid)
    assert [t.params for t in trials] == [
        dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())
    ]
    for t in trials:
        dumped = t.spec.model_dump()
        for path, value in t.params.items():
            section, field = path.split(".")
            assert dumped[section][field] == value


def test_grid_leaves_the_base_spec_alone() -> None:
    s = sweep(grid={"regularization.l2": [0.5]})
    expand(s, IRIS, MAX_PARAMETERS)
    assert s.base.regularization.l2 == 0.0


def test_path_trials_follow_the_values_in_order() -> None:
    trials = trials_of(path={"regularization.l1": [1e-2, 1e-3, 1e-4]})
    assert [t.params for t in trials] == [{"regularization.l1": v} for v in (1e-2, 1e-3, 1e-4)]
    assert [t.spec.regularization.l1 for t in trials] == [1e-2, 1e-3, 1e-4]


# --- random -----------------------------------------------------------------------------------

RANDOM = {
    "regularization.l2": {"log_uniform": [1e-6, 1e-1]},
    "optimizer.lr": {"uniform": [0.01, 0.2]},
    "model.dropout": {"choice": [0.0, 0.25, 0.5]},
}


def test_random_draws_trials_within_their_distributions() -> None:
    trials = trials_of(random=RANDOM, trials=60, seed=7)
    assert len(trials) == 60
    assert [t.index for t in trials] == list(range(60))
    l2 = [t.params["regularization.l2"] for t in trials]
    lr = [t.params["optimizer.lr"] for t in trials]
    p = [t.params["model.dropout"] for t in trials]
    assert all(1e-6 <= v <= 1e-1 for v in l2)
    assert all(0.01 <= v <= 0.2 for v in lr)
    assert set(p) == {0.0, 0.25, 0.5}  # every choice drawn, nothing else
    # the specs carry the drawn values
    for t in trials:
        assert t.spec.regularization.l2 == t.params["regularization.l2"]
        assert t.spec.optimizer.lr == t.params["optimizer.lr"]
        assert t.spec.model.dropout == t.params["model.dropout"]
    # log-uniform: spread over the decades (a uniform draw would put ~90% in the top decade)
    decades = {math.floor(math.log10(v)) for v in l2}
    assert len(decades) >= 4, decades
    assert sum(v < 1e-3 for v in l2) >= 20
    # uniform: not bunched at one end
    assert min(lr) < 0.06 and max(lr) > 0.15


def test_random_is_reproducible_by_seed() -> None:
    a = trials_of(random=RANDOM, trials=8, seed=1)
    b = trials_of(random=RANDOM, trials=8, seed=1)
    c = trials_of(random=RANDOM, trials=8, seed=2)
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.params for t in a] != [t.params for t in c]
    assert [t.params["regularization.l2"] for t in a] != [t.params["regularization.l2"] for t in c]


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        pytest.param({"grid": {}}, "grid", id="empty-grid"),
        pytest.param({"grid": {"regularization.l2": []}}, "grid", id="grid-field-without-values"),
        pytest.param(
            {"grid": {"regularization.l2": [0.1]}, "random": {"regularization.l1": {"uniform": [0, 1]}}},
            "exactly one of grid, random or path",
            id="grid-and-random",
        ),
        pytest.param(
            {"grid": {"regularization.l2": [0.1]}, "path": {"regularization.l1": [1, 0.1]}},
            "exactly one of grid, random or path",
            id="grid-and-path",
        ),
        pytest.param({}, "exactly one of grid, random or path", id="no-search"),
        pytest.param({"random": {}}, "random", id="empty-random"),
        pytest.param({"grid": {"regularization.l2": [0.1]}, "cv_folds": 1}, "cv_folds", id="one-fold"),
        pytest.param({"grid": {"regularization.l2": [0.1]}, "cv_folds": 11}, "cv_folds", id="eleven-folds"),
        pytest.param(
            {"grid": {"regularization.l2": [0.1]}, "base": {"split": {"validation": 0.0}}},
            "validation",
            id="no-validation-data",
        ),
        pytest.param(
            {"random": {"regularization.l2": {"log_uniform": [0, 0.1]}}}, "log_uniform", id="log-uniform-zero"
        ),
        pytest.param(
            {"random": {"regularization.l2": {"log_uniform": [-1e-3, 0.1]}}},
            "log_uniform",
            id="log-uniform-negative",
        ),
        pytest.param(
            {"random": {"regularization.l2": {"uniform": [0.1, 0.01]}}}, "uniform", id="uniform-reversed"
        ),
        pytest.param(
            {"random": {"regularization.l2": {"uniform": [0, 1], "choice": [1]}}},
            "exactly one of uniform, log_uniform or choice",
            id="two-distributions",
        ),
        pytest.param({"path": {"regularization.l2": [0.1]}}, "path", id="path-of-one-value"),
        pytest.param(
            {"path": {"regularization.l2": [0.1, 0.01], "regularization.l1": [0.1, 0.01]}},
            "path",
            id="path-of-two-fields",
        ),
        pytest.param(
            {"random": {"regularization.l2": {"uniform": [0, 1]}}, "trials": MAX_TRIALS + 1},
            "trials",
            id="too-many-random-trials",
        ),
    ],
)
def test_invalid_sweeps_are_refused_by_the_schema(parts: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        sweep(**parts)
    assert needle in str(e.value)


def test_cv_folds_without_a_validation_split_is_fine() -> None:
    s = sweep(grid={"regularization.l2": [0.1]}, cv_folds=3, base={"split": {"validation": 0.0}})
    assert len(expand(s, IRIS, MAX_PARAMETERS)) == 1


@pytest.mark.parametrize("path", ["regularization.l3", "model.nope", "nope.l2", "regularization.l2.x"])
def test_unknown_field_path_is_named(path: str) -> None:
    with pytest.raises(SpecError) as e:
        trials_of(grid={path: [0.1]})
    assert e.value.loc == ("grid", path)
    assert "unknown field path" in e.value.message
    assert path in str(e.value)


def test_unknown_field_path_in_random_and_path_searches() -> None:
    with pytest.raises(SpecError) as e:
        trials_of(random={"regularization.l3": {"uniform": [0, 1]}})
    assert e.value.loc == ("random", "regularization.l3")
    with pytest.raises(SpecError) as e:
        trials_of(path={"regularization.l3": [1, 0.1]})
    assert e.value.loc == ("path", "regularization.l3")


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("model.dropout", [0.0, 1.5]),
        ("optimizer.lr", [0.1, -1]),
        ("regularization.l2", [-0.5]),
        ("training.epochs", [0]),
    ],
)
def test_a_value_that_fails_jobspec_validation_names_the_field(path: str, values: list[Any]) -> None:
    section, field = path.split(".")
    with pytest.raises(SpecError) as e:
        trials_of(grid={path: values})
    assert e.value.loc == ("grid", path)
    bad = len(values) - 1
    assert f"trial {bad}" in e.value.message
    # after the trial's params, the message names the JobSpec field that refused the value
    assert re.search(rf"\): {section}\.([a-z]+\.)?{field}: ", e.value.message), e.value.message


def test_the_refused_field_is_named_when_another_field_comes_first() -> None:
    # the loc is the grid field whose value failed, not the first field of the grid
    with pytest.raises(SpecError) as e:
        trials_of(grid={"regularization.l2": [0.0, 1e-3], "model.dropout": [0.0, 1.5]})
    assert "trial 1" in e.value.message and "dropout" in e.value.message
    assert e.value.loc == ("grid", "model.dropout")


def test_more_than_max_trials_combinations_is_refused() -> None:
    n = math.isqrt(MAX_TRIALS) + 1  # n² > MAX_TRIALS
    values = [i / 1000 for i in range(n)]
    with pytest.raises(SpecError) as e:
        trials_of(grid={"regularization.l2": values, "regularization.l1": values})
    assert e.value.loc == ("grid",)
    assert str(n * n) in e.value.message and str(MAX_TRIALS) in e.value.message
    # exactly MAX_TRIALS is fine
    ok = trials_of(grid={"regularization.l2": [i / 1000 for i in range(MAX_TRIALS)]})
    assert len(ok) == MAX_TRIALS


@pytest.mark.parametrize(
    ("dataset", "metric"),
    [("iris", "val_r2"), ("iris", "val_mse"), ("iris", "accuracy"), ("diabetes", "val_accuracy")],
)
def test_an_objective_the_dataset_does_not_report_is_refused(dataset: str, metric: str) -> None:
    s = sweep(
        grid={"regularization.l2": [0.0, 0.1]},
        objective={"metric": metric, "mode": "max"},
        base={"dataset": {"name": dataset}},
    )
    with pytest.raises(SpecError) as e:
        expand(s, BUILTIN_SHAPES[dataset], MAX_PARAMETERS)
    assert e.value.loc == ("objective", "metric")
    assert metric in e.value.message


@pytest.mark.parametrize(("dataset", "metric"), [("iris", "val_accuracy"), ("diabetes", "val_r2")])
def test_a_reported_objective_is_accepted(dataset: str, metric: str) -> None:
    s = sweep(
        grid={"regularization.l2": [0.0, 0.1]},
        objective={"metric": metric, "mode": "max"},
        base={"dataset": {"name": dataset}},
    )
    assert len(expand(s, BUILTIN_SHAPES[dataset], MAX_PARAMETERS)) == 2


def test_an_infeasible_trial_is_refused_with_its_field() -> None:
    s = sweep(grid={"model.hidden": [[16], [4096, 4096]]})
    with pytest.raises(SpecError) as e:
        expand(s, IRIS, 100_000)
    assert e.value.loc == ("grid", "model")
    assert "trial 1" in e.value.message and "parameters" in e.value.message


# --- stacking ---------------------------------------------------------------------------------

CNN = {"type": "cnn", "channels": [4], "hidden": [16]}


def test_trials_differing_only_in_varying_fields_share_a_group() -> None:
    a = make_spec()
    b = make_spec(
        regularization={"l1": 1e-3, "l2": 1e-2, "label_smoothing": 0.1},
        optimizer={"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-3},
        model={"type": "mlp", "hidden": [16], "dropout": 0.5},
        training={"seed": 5},
        name="other",
    )
    assert group_key(a) == group_key(b)
    assert not_stackable(a) is None and not_stackable(b) is None
    for other in (
        make_spec(training={"batch_size": 8}),
        make_spec(training={"epochs": 3}),
        make_spec(model={"type": "mlp", "hidden": [32]}),
        make_spec(optimizer={"name": "adam", "lr": 0.05}),
        make_spec(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5}),
        make_spec(regularization={"max_norm": 1.0}),
        make_spec(regularization={"l1_mode": "proximal"}),
        make_spec(split={"validation": 0.2, "test": 0.2, "seed": 1}),
        make_spec(dataset={"name": "wine"}),
    ):
        assert group_key(other) != group_key(a)


def test_vectorize_refusal_names_the_trial_that_cannot_stack() -> None:
    mlp = make_spec(dataset={"name": "digits"})
    cnn = make_spec(dataset={"name": "digits"}, model=CNN)
    assert vectorize_refusal([mlp, mlp]) is None
    reason = vectorize_refusal([mlp, cnn, mlp])
    assert reason is not None
    assert "trial 1" in reason and "cnn" in reason
    bn = make_spec(model={"type": "mlp", "hidden": [16], "batch_norm": True})
    reason = vectorize_refusal([make_spec(), bn])
    assert reason is not None and "trial 1" in reason and "batch_norm" in reason
    clipped = make_spec(training={"grad_clip_norm": 1.0})
    assert "trial 0" in (vectorize_refusal([clipped]) or "")


# --- the winner's retraining spec ---------------------------------------------------------------


def test_best_job_spec_trains_on_train_and_validation_and_keeps_the_test_split() -> None:
    s = sweep(
        name="lam",
        grid={"regularization.l2": [0.0, 1e-3]},
        base={
            "split": {"validation": 0.25, "test": 0.15, "seed": 3},
            "training": {"epochs": 40, "early_stopping": {"patience": 3}},
        },
    )
    trials = expand(s, IRIS, MAX_PARAMETERS)
    best = best_job_spec(s, trials[1], 7.4)
    assert best.split.validation == 0.0
    assert best.split.test == 0.15 and best.split.seed == 3
    assert best.training.early_stopping is None
    assert best.training.epochs == 7
    assert best.regularization.l2 == 1e-3  # the winner's value
    assert best.name == "lam-best"
    assert best_job_spec(s, trials[1], 0.4).training.epochs == 1
    # no best epoch known: the trial's epochs
    assert best_job_spec(s, trials[1], None).training.epochs == 40
    # the trial itself is unchanged
    assert trials[1].spec.split.validation == 0.25
    assert trials[1].spec.training.early_stopping is not None


def test_best_job_spec_without_early_stopping_keeps_the_epochs() -> None:
    s = sweep(grid={"regularization.l2": [1e-3]}, base={"training": {"epochs": 12}})
    (trial,) = expand(s, IRIS, MAX_PARAMETERS)
    best = best_job_spec(s, trial, 3.0)
    assert best.training.epochs == 12
    assert best.split.validation == 0.0 and best.split.test == BASE["split"]["test"]
    assert best.name == "sweep-best"


def test_best_job_spec_carries_the_sweeps_notify_secret_back() -> None:
    """The stored sweep leaves notify.secret out (write-only); the retrain job gets it back, and
    a sweep without notify gets no notify from a secret."""
    secret = "whsec_" + "A" * 32
    hooked = sweep(grid={"regularization.l2": [1e-3]}, base={"notify": {"url": "https://h.example/x"}})
    (trial,) = expand(hooked, IRIS, MAX_PARAMETERS)
    best = best_job_spec(hooked, trial, None, secret)
    assert best.notify is not None and best.notify.secret == secret
    assert best.notify.url == "https://h.example/x"
    unsigned = best_job_spec(hooked, trial, None).notify
    assert unsigned is not None and unsigned.secret is None
    plain = sweep(grid={"regularization.l2": [1e-3]})
    (trial,) = expand(plain, IRIS, MAX_PARAMETERS)
    assert best_job_spec(plain, trial, None, secret).notify is None
