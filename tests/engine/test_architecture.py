"""Shape arithmetic of service.contract.architecture: refusals name their field (SpecError.loc)."""

from __future__ import annotations

import pytest
from engine_helpers import make_spec

from service.contract.architecture import (
    BUILTIN_SHAPES,
    SpecError,
    check_feasible,
    known_shape,
    parameter_count,
    plan_model,
)

BIG = 50_000_000


def test_cnn_on_tabular_data_names_model_type() -> None:
    spec = make_spec(model={"type": "cnn"})
    with pytest.raises(SpecError) as info:
        check_feasible(spec, BUILTIN_SHAPES["iris"], BIG)
    assert info.value.loc == ("model", "type")
    assert "model.type" in str(info.value)


def test_parameter_cap_is_enforced() -> None:
    spec = make_spec(dataset={"name": "digits"}, model={"type": "mlp", "hidden": [1024, 1024]})
    n = parameter_count(check_feasible(spec, BUILTIN_SHAPES["digits"], BIG))
    assert n == 64 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    with pytest.raises(SpecError) as info:
        check_feasible(spec, BUILTIN_SHAPES["digits"], n - 1)
    assert info.value.loc == ("model",)
    assert "exceed" in info.value.message
    check_feasible(spec, BUILTIN_SHAPES["digits"], n)  # exactly at the cap is allowed


def test_label_smoothing_on_regression_is_refused() -> None:
    spec = make_spec(dataset={"name": "diabetes"}, regularization={"label_smoothing": 0.1})
    with pytest.raises(SpecError) as info:
        check_feasible(spec, BUILTIN_SHAPES["diabetes"], BIG)
    assert info.value.loc == ("regularization", "label_smoothing")


def test_accuracy_monitor_on_regression_is_refused() -> None:
    spec = make_spec(
        dataset={"name": "diabetes"},
        training={"early_stopping": {"monitor": "val_accuracy", "mode": "max"}},
    )
    with pytest.raises(SpecError) as info:
        check_feasible(spec, BUILTIN_SHAPES["diabetes"], BIG)
    assert info.value.loc == ("training", "early_stopping", "monitor")


def test_sequential_refusals_name_the_layer() -> None:
    digits = BUILTIN_SHAPES["digits"]
    conv_after_flatten = make_spec(
        dataset={"name": "digits"},
        model={
            "type": "sequential",
            "layers": [{"type": "flatten"}, {"type": "conv2d", "out_channels": 4}, {"type": "linear"}],
        },
    )
    with pytest.raises(SpecError) as info:
        plan_model(conv_after_flatten, digits)
    assert info.value.loc == ("model", "layers", 1)
    linear_on_images = make_spec(
        dataset={"name": "digits"},
        model={"type": "sequential", "layers": [{"type": "conv2d", "out_channels": 4}, {"type": "linear"}]},
    )
    with pytest.raises(SpecError) as info:
        plan_model(linear_on_images, digits)
    assert info.value.loc == ("model", "layers", 1)
    wrong_out = make_spec(model={"type": "sequential", "layers": [{"type": "linear", "out_features": 7}]})
    with pytest.raises(SpecError) as info:
        plan_model(wrong_out, BUILTIN_SHAPES["iris"])
    assert info.value.loc == ("model", "layers", 0, "out_features")


def test_too_many_conv_blocks_for_8x8_images() -> None:
    spec = make_spec(dataset={"name": "digits"}, model={"type": "cnn", "channels": [4, 4, 4, 4]})
    with pytest.raises(SpecError) as info:
        plan_model(spec, BUILTIN_SHAPES["digits"])
    assert info.value.loc == ("model", "channels", 3)


def test_known_shapes() -> None:
    assert known_shape(make_spec(dataset={"name": "wine"})) == BUILTIN_SHAPES["wine"]
    synth = make_spec(dataset={"name": "synthetic", "task": "regression", "n_features": 7, "n_samples": 50})
    shape = known_shape(synth)
    assert shape is not None and (shape.task, shape.n_features, shape.n_outputs) == ("regression", 7, 1)
    assert known_shape(make_spec(dataset={"id": "abc"})) is None


@pytest.mark.parametrize(
    ("dataset", "monitor"),
    [("iris", "val_r2"), ("iris", "val_mse"), ("iris", "train_accuracy"), ("diabetes", "train_accuracy")],
)
def test_a_monitor_that_is_never_reported_is_refused_before_training(dataset: str, monitor: str) -> None:
    """The spec's pattern lets through names the engine never reports for the task; the API's
    check must refuse them (422 naming the field), not the worker after the job is queued."""
    spec = make_spec(dataset={"name": dataset}, training={"early_stopping": {"monitor": monitor}})
    with pytest.raises(SpecError) as info:
        check_feasible(spec, BUILTIN_SHAPES[dataset], BIG)
    assert info.value.loc == ("training", "early_stopping", "monitor")
