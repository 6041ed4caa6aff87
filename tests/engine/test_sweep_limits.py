"""A sweep within the caps and saying what it does (no torch): every trial it may train is
within the server's caps, a space's joint worst case too though each field alone is within
them; a field the trials cannot vary is refused naming it; a grid sampler asked for more
trials than its space has combinations runs each once, with a warning."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import BASE, merge
from pydantic import ValidationError

from service.contract.architecture import BUILTIN_SHAPES, Caps, check_caps
from service.contract.errors import SpecError
from service.contract.search_space import MAX_GRID_COMBINATIONS, grid_size
from service.contract.spec import JobSpec
from service.contract.sweep_spec import (
    MAX_JOINT_CORNERS,
    SweepSpec,
    clamped,
    expand,
    trainings,
    trial_count,
    worst_case_params,
)

DIGITS = BUILTIN_SHAPES["digits"]
IRIS = BUILTIN_SHAPES["iris"]
BIG = 10_000_000
# Each corner of HIDDEN_X_BATCH alone needs at most 7.0 MB of worker memory on digits (hidden
# [3000] at batch 32: 7,023,984 bytes; hidden [8] at batch 1797: 3,172,480); both together
# 92,788,864 bytes.
MEMORY_CAP = 10_000_000
HIDDEN_X_BATCH: dict[str, Any] = {
    "model.hidden": {"choice": [[8], [3000]]},
    "training.batch_size": {"int": [32, 1797]},
    "regularization.l2": {"log_uniform": [1e-6, 0.1]},
}


def sweep(**parts: Any) -> SweepSpec:
    base = merge(BASE, parts.pop("base", {}))
    return SweepSpec.model_validate({"base": base, **parts})


def digits_search(space: dict[str, Any], **parts: Any) -> SweepSpec:
    return sweep(
        base={"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [8]}}, space=space, **parts
    )


# --- the joint worst case ---------------------------------------------------------------------


def test_each_corner_fits_but_the_joint_worst_case_is_refused_naming_the_space_field() -> None:
    s = digits_search(HIDDEN_X_BATCH)
    caps = Caps(BIG, MEMORY_CAP)
    for hidden, batch in (([3000], 32), ([8], 1797)):  # the corners the API checked before
        spec = JobSpec.model_validate(
            merge(s.base.model_dump(mode="json"), {"model": {"type": "mlp", "hidden": hidden},
                                                  "training": {"batch_size": batch}})
        )  # fmt: skip
        check_caps(spec, DIGITS, caps)
    with pytest.raises(SpecError) as e:
        expand(s, DIGITS, BIG, max_memory_bytes=MEMORY_CAP)
    assert e.value.loc == ("space", "training.batch_size")  # the batch drives the estimate
    assert "'model.hidden': [3000]" in e.value.message and "'training.batch_size': 1797" in e.value.message
    assert "worker memory" in e.value.message
    # within a cap that holds the joint worst case, the space is admitted, that case checked last
    trials = expand(s, DIGITS, BIG, max_memory_bytes=100_000_000)
    assert trials[-1].params["model.hidden"] == [3000] and trials[-1].params["training.batch_size"] == 1797


def test_the_parameter_cap_names_the_model_field() -> None:
    space = {"model.hidden": {"choice": [[8], [300], [8, 8]]}, "training.batch_size": {"int": [32, 64]}}
    with pytest.raises(SpecError) as e:
        expand(digits_search(space), DIGITS, 10_000)
    assert e.value.loc == ("space", "model.hidden") and "parameters" in e.value.message


def test_epochs_times_samples_is_a_cap_of_every_trial_and_of_a_spaces_worst_case() -> None:
    grid = sweep(base={"dataset": {"name": "digits"}}, grid={"training.epochs": [1, 50]})
    with pytest.raises(SpecError) as e:
        expand(grid, DIGITS, BIG, max_epoch_samples=1797 * 10)
    assert e.value.loc == ("grid", "training", "epochs") and "sample passes" in e.value.message
    space = digits_search({"training.epochs": {"int": [1, 50]}})
    with pytest.raises(SpecError) as e:
        expand(space, DIGITS, BIG, max_epoch_samples=1797 * 10)
    assert e.value.loc == ("space", "training.epochs")


def test_a_conditional_size_field_is_taken_where_its_condition_holds() -> None:
    space = {
        "optimizer.name": {"choice": ["adam", "sgd"]},
        "model.hidden": {"choice": [[8], [3000]], "when": {"optimizer.name": "sgd"}},
        "training.batch_size": {"int": [32, 1797]},
    }
    worst = worst_case_params(digits_search(space), DIGITS, Caps(BIG, MEMORY_CAP))
    assert worst == {"optimizer.name": "sgd", "model.hidden": [3000], "training.batch_size": 1797}


def test_past_max_joint_corners_each_fields_own_worst_corner_is_taken_together() -> None:
    widths = [[w] for w in range(1, 201)]  # 200 × 2 × 3 corners > MAX_JOINT_CORNERS
    space = {
        "model.hidden": {"choice": widths},
        "training.batch_size": {"int": [32, 1797]},
        "training.epochs": {"choice": [1, 2, 3]},
    }
    assert MAX_JOINT_CORNERS < 200 * 2 * 3
    worst = worst_case_params(digits_search(space), DIGITS, Caps(BIG, 3_000_000, 10**9))
    assert worst == {"model.hidden": [200], "training.batch_size": 1797, "training.epochs": 3}


def test_a_space_without_size_fields_has_no_joint_case() -> None:
    s = digits_search({"regularization.l2": {"log_uniform": [1e-6, 0.1]}})
    assert worst_case_params(s, DIGITS, Caps(BIG)) is None
    assert len(expand(s, DIGITS, BIG)) == 2  # its two corners


# --- fields the trials cannot vary --------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"grid": {"dataset.id": ["ds-1", "ds-2"]}}, "dataset.id"),
        ({"grid": {"dataset.name": ["iris", "wine"]}}, "dataset.name"),
        ({"grid": {"dataset": [{"name": "iris"}, {"name": "wine"}]}}, "dataset"),
        ({"random": {"dataset.n_samples": {"choice": [100, 200]}}, "trials": 2}, "dataset.n_samples"),
        ({"path": {"dataset.noise": [1.0, 0.1]}}, "dataset.noise"),
        ({"random": {"training.device": {"choice": ["cpu", "cuda"]}}, "trials": 2}, "training.device"),
        ({"grid": {"training": [{"epochs": 2, "device": "cuda"}]}}, "training"),
        ({"space": {"notify.url": {"choice": ["https://a.example/x", "https://b.example/y"]}}}, "notify.url"),
        ({"grid": {"name": ["a", "b"]}}, "name"),
    ],
)
def test_a_field_the_trials_cannot_vary_is_refused_naming_it(search: dict[str, Any], field: str) -> None:
    synthetic = "dataset.n_samples" in str(search) or "dataset.noise" in str(search)
    base: dict[str, Any] = {"dataset": {"name": "synthetic"}} if synthetic else {}
    if "dataset.id" in str(search):
        base = {"dataset": {"id": "ds-1"}}
    if "notify" in str(search):
        base = {"notify": {"url": "https://a.example/x"}}
    s = sweep(base=base, **search)
    with pytest.raises(SpecError) as e:
        expand(s, None, BIG)
    kind = next(iter(k for k in ("grid", "random", "path", "space") if k in search))
    assert e.value.loc == (kind, field)
    assert "cannot vary per trial" in e.value.message


def test_fields_the_trials_do_vary_are_not_refused() -> None:
    s = sweep(grid={"split.seed": [0, 1], "training.seed": [0, 1], "model.hidden": [[4], [8]]})
    assert len(expand(s, IRIS, BIG)) == 8


# --- the grid sampler: never more trials than combinations ------------------------------------


def test_a_grid_sampler_asked_for_more_trials_than_combinations_runs_each_once_with_a_warning() -> None:
    s = sweep(space={"optimizer.name": {"choice": ["adam", "sgd"]}}, sampler="grid", trials=8)
    assert grid_size(s.space or {}) == 2 and trial_count(s) == 2 and trainings(s) == 2
    ran, warnings = clamped(s)
    assert ran.trials == 2 and ran.space == s.space
    assert len(warnings) == 1 and "2 combinations" in warnings[0] and "8 asked" in warnings[0]
    assert clamped(ran) == (ran, [])  # as it runs, nothing more to say
    within = sweep(space={"training.batch_size": {"int": [8, 12]}}, sampler="grid", trials=5)
    assert clamped(within) == (within, []) and trial_count(within) == 5


def test_a_grid_sampler_over_max_grid_combinations_is_refused() -> None:
    with pytest.raises(ValidationError, match="combinations"):
        sweep(space={"training.seed": {"int": [0, MAX_GRID_COMBINATIONS]}}, sampler="grid")
