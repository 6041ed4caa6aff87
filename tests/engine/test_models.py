"""Models: the engine builds exactly what service.contract.architecture plans (same parameter count),
with dropout on hidden activations only."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import make_spec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from service.contract.architecture import BUILTIN_SHAPES, DataShape, parameter_count, plan_model
from service.contract.errors import SpecError
from service.contract.spec import JobSpec
from worker.training.models import create_model, from_factory


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_no_dropout_after_last_linear(model: nn.Sequential) -> None:
    kinds = list(model)
    last = max(i for i, m in enumerate(kinds) if isinstance(m, nn.Linear))
    assert not any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in kinds[last + 1 :])
    assert last == len(kinds) - 1  # the logits are the model's output, untouched


def test_mlp_layout() -> None:
    spec = make_spec(model={"type": "mlp", "hidden": [32, 16, 8], "dropout": 0.3, "batch_norm": True})
    model = create_model(spec, BUILTIN_SHAPES["iris"])
    kinds = [type(m) for m in model]
    block = [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert kinds == block * 3 + [nn.Linear]
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.3, 0.3, 0.3]
    assert model[-1].in_features == 8 and model[-1].out_features == 3
    assert_no_dropout_after_last_linear(model)


def test_cnn_layout() -> None:
    spec = make_spec(
        dataset={"name": "digits"},
        model={"type": "cnn", "channels": [4, 8], "hidden": [16], "dropout": 0.5, "dropout2d": 0.2},
    )
    model = create_model(spec, BUILTIN_SHAPES["digits"])
    assert sum(isinstance(m, nn.Conv2d) for m in model) == 2
    assert sum(isinstance(m, nn.Dropout2d) for m in model) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model) == 1
    assert_no_dropout_after_last_linear(model)
    assert n_params(model) == parameter_count(plan_model(spec, BUILTIN_SHAPES["digits"]))


ACTS = st.sampled_from(["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu"])
SHAPES = st.one_of(
    st.sampled_from([BUILTIN_SHAPES[k] for k in ("iris", "wine", "breast_cancer", "diabetes", "digits")]),
    st.builds(
        lambda f, c: DataShape("classification", f, c),
        st.integers(1, 50),
        st.integers(2, 12),
    ),
)


@st.composite
def mlp_models(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "mlp",
        "hidden": draw(st.lists(st.integers(1, 40), max_size=4)),
        "activation": draw(ACTS),
        "dropout": draw(st.sampled_from([0.0, 0.25, 0.5])),
        "batch_norm": draw(st.booleans()),
    }


@st.composite
def tabular_sequential(draw: st.DrawFn) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        layers.append({"type": "linear", "out_features": draw(st.integers(1, 40))})
        if draw(st.booleans()):
            layers.append({"type": "batch_norm"})
        layers.append({"type": draw(st.sampled_from(["relu", "gelu", "tanh"]))})
        if draw(st.booleans()):
            layers.append({"type": "dropout", "p": 0.5})
    layers.append({"type": "linear"})
    return {"type": "sequential", "layers": layers}


@st.composite
def image_sequential(draw: st.DrawFn) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        layers.append(
            {
                "type": "conv2d",
                "out_channels": draw(st.integers(1, 12)),
                "kernel_size": draw(st.integers(1, 5)),
                "stride": draw(st.integers(1, 2)),
                "padding": draw(st.integers(0, 2)),
            }
        )
        if draw(st.booleans()):
            layers.append({"type": "batch_norm"})
        layers.append({"type": "relu"})
        if draw(st.booleans()):
            layers.append({"type": "max_pool2d", "kernel_size": 2})
        if draw(st.booleans()):
            layers.append({"type": "dropout", "p": 0.25})
    layers.append({"type": "flatten"})
    if draw(st.booleans()):
        layers += [{"type": "linear", "out_features": draw(st.integers(1, 32))}, {"type": "relu"}]
    layers.append({"type": "linear"})
    return {"type": "sequential", "layers": layers}


@st.composite
def cnn_models(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "cnn",
        "channels": draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)),
        "kernel_size": draw(st.sampled_from([1, 3, 5])),
        "hidden": draw(st.lists(st.integers(1, 32), max_size=2)),
        "batch_norm": draw(st.booleans()),
        "dropout2d": draw(st.sampled_from([0.0, 0.25])),
    }


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    case=st.one_of(
        st.tuples(mlp_models(), SHAPES),
        st.tuples(tabular_sequential(), SHAPES),
        st.tuples(image_sequential(), st.just(BUILTIN_SHAPES["digits"])),
        st.tuples(cnn_models(), st.just(BUILTIN_SHAPES["digits"])),
    )
)
def test_planned_parameter_count_equals_the_built_model(case: tuple[dict[str, Any], DataShape]) -> None:
    model_spec, shape = case
    spec = make_spec(model=model_spec)
    try:
        plan = plan_model(spec, shape)
    except SpecError:
        assume(False)
        return
    model = create_model(spec, shape)
    assert parameter_count(plan) == n_params(model)
    assert len(model) == len(plan)
    assert_no_dropout_after_last_linear(model)


def test_the_spec_accepts_exactly_the_registered_model_types() -> None:
    """One registry: JobSpec's `model` is validated against MODEL_TYPES (built-ins and plugins),
    each type's config class says its own name, and anything else is refused at model.type."""
    from typing import get_args

    from pydantic import ValidationError

    from service.contract.architecture import MODEL_TYPES
    from service.contract.model_plugins import model_specs

    specs = model_specs()
    assert {"mlp", "cnn", "sequential"} <= set(specs) == set(MODEL_TYPES)
    for name, cls in specs.items():
        assert get_args(cls.model_fields["type"].annotation) == (name,)
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate({"dataset": {"name": "iris"}, "model": {"type": "gru_of_my_own"}})
    (err,) = e.value.errors()
    assert err["loc"] == ("model", "type") and "'mlp'" in err["msg"]


def lying_factory(model: Any, shape: Any) -> nn.Module:
    """A factory that builds more than its planner declared (a plugin's bug, or worse)."""
    return nn.Linear(shape.n_features, 1000)


def test_a_factory_that_builds_more_than_its_planner_counted_is_refused() -> None:
    spec = JobSpec.model_validate({"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}})
    shape = DataShape("classification", 4, 3, None, 150)
    with pytest.raises(ValueError, match="built 5,000 parameters, its planner counted 35"):
        from_factory(f"{__name__}:lying_factory", spec, shape, planned=35)
