"""Property-based tests of the JobSpec (hypothesis): valid specs round-trip; a non-finite number
anywhere is refused; junk of any shape is refused with a ValidationError and nothing else."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.contract.spec import BUILTIN_DATASETS, JobSpec

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=0.95, exclude_max=True)
widths = st.lists(st.integers(1, 512), max_size=4)
seeds = st.integers(0, 2**31 - 1)

datasets = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(BUILTIN_DATASETS)}),
    st.fixed_dictionaries(
        {"name": st.just("synthetic")},
        optional={
            "task": st.sampled_from(["classification", "regression"]),
            "n_samples": st.integers(10, 10_000),
            "n_features": st.integers(1, 100),
            "n_classes": st.integers(2, 20),
            "noise": st.floats(0, 100),
            "seed": seeds,
        },
    ),
    st.fixed_dictionaries({"id": st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")}),
)
models = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("mlp")},
        optional={
            "hidden": widths,
            "activation": st.sampled_from(["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu"]),
            "dropout": unit,
            "batch_norm": st.booleans(),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("cnn")},
        optional={
            "channels": st.lists(st.integers(1, 64), min_size=1, max_size=3),
            "kernel_size": st.integers(1, 11),
            "hidden": widths,
            "dropout": unit,
            "dropout2d": unit,
        },
    ),
)
specs = st.fixed_dictionaries(
    {"dataset": datasets, "model": models},
    optional={
        "name": st.none() | st.text(max_size=200),
        "split": st.fixed_dictionaries(
            {}, optional={"validation": st.floats(0, 0.45), "test": st.floats(0, 0.45), "seed": seeds}
        ),
        "regularization": st.fixed_dictionaries(
            {},
            optional={
                "l1": st.floats(0, 100),
                "l2": st.floats(0, 1),
                "apply_to": st.sampled_from(["weights", "all"]),
                "l1_mode": st.sampled_from(["subgradient", "proximal"]),
                "label_smoothing": unit,
            },
        ),
        "optimizer": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]),
                "lr": st.floats(1e-6, 10),
                "momentum": unit,
            },
        ),
        "training": st.fixed_dictionaries(
            {},
            optional={
                "epochs": st.integers(1, 10_000),
                "batch_size": st.integers(1, 65_536),
                "seed": seeds,
                "device": st.sampled_from(["auto", "cpu", "cuda"]),
                "grad_clip_norm": st.none() | st.floats(1e-3, 1e6),
                "time_limit_s": st.none() | st.floats(0.1, 7 * 24 * 3600),
            },
        ),
    },
)


def _valid(raw: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError:
        assume(False)  # a combination a model validator refuses (e.g. momentum with adam)
        raise


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


@PROFILE
@given(specs)
def test_a_valid_spec_round_trips(raw: dict[str, Any]) -> None:
    spec = _valid(raw)
    dumped = spec.model_dump(mode="json")
    text = json.dumps(dumped, allow_nan=False)  # plain JSON: no NaN or infinity
    again = JobSpec.model_validate(json.loads(text))
    assert again == spec
    assert again.model_dump(mode="json") == dumped


@PROFILE
@given(specs, st.data(), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_non_finite_number_anywhere_is_refused(
    raw: dict[str, Any], data: st.DataObject, bad: float
) -> None:
    dumped = _valid(raw).model_dump(mode="json")
    path = data.draw(st.sampled_from(_leaves(dumped)))
    try:
        JobSpec.model_validate(_replace(dumped, path, bad))
    except ValidationError:
        return
    raise AssertionError(f"{bad} at {path} was accepted")


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@PROFILE
@given(json_junk)
def test_junk_raises_only_validation_error(junk: Any) -> None:
    with contextlib.suppress(ValidationError):
        JobSpec.model_validate(junk)


@PROFILE
@given(specs, st.data(), json_junk)
def test_a_valid_spec_with_junk_in_one_place_raises_only_validation_error(
    raw: dict[str, Any], data: st.DataObject, junk: Any
) -> None:
    dumped = _valid(raw).model_dump(mode="json")
    path = data.draw(st.sampled_from(_leaves(dumped)))
    try:
        spec = JobSpec.model_validate(_replace(dumped, path, junk))
    except ValidationError:
        return
    # Accepted: then it is a valid spec, and it round-trips like one.
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
