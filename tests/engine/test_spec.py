"""JobSpec validation: bad values are refused by pydantic with the field's path named."""

from __future__ import annotations

import math
from typing import Any

import pytest
from engine_helpers import BASE, make_spec, merge
from pydantic import ValidationError

from service.contract.spec import MAX_EPOCHS, JobSpec


def errors_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(raw)
    return info.value.errors()


def names_field(errors: list[dict[str, Any]], *path: str | int) -> bool:
    """True when some error's loc holds `path` in order (tagged unions add their tag between)."""
    for err in errors:
        loc = list(err["loc"])
        i = 0
        for part in loc:
            if i < len(path) and part == path[i]:
                i += 1
        if i == len(path):
            return True
    return False


def test_minimal_spec_fills_every_default() -> None:
    spec = JobSpec.model_validate({"dataset": {"name": "digits"}, "model": {"type": "mlp"}})
    assert spec.optimizer.name == "adam" and spec.optimizer.lr == 0.001
    assert spec.regularization.l1 == 0 and spec.regularization.l2 == 0
    assert spec.regularization.apply_to == "weights"
    assert spec.training.epochs == 20 and spec.training.batch_size == 64
    dumped = spec.model_dump(mode="json")
    assert JobSpec.model_validate(dumped) == spec  # the filled spec is itself valid


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"optimizer": {"lr": 0}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": -0.1}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": math.nan}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": math.inf}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": -math.inf}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": "NaN"}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": "0.01"}}, ("optimizer", "lr")),
        ({"optimizer": {"lr": True}}, ("optimizer", "lr")),
        ({"training": {"epochs": 0}}, ("training", "epochs")),
        ({"training": {"epochs": MAX_EPOCHS + 1}}, ("training", "epochs")),
        ({"training": {"batch_size": 0}}, ("training", "batch_size")),
        ({"model": {"type": "mlp", "dropout": 1.0}}, ("model", "dropout")),
        ({"model": {"type": "mlp", "dropout": -0.1}}, ("model", "dropout")),
        ({"regularization": {"l1": -0.001}}, ("regularization", "l1")),
        ({"regularization": {"l2": -0.001}}, ("regularization", "l2")),
        ({"regularization": {"l2": math.nan}}, ("regularization", "l2")),
        ({"regularization": {"l2": "inf"}}, ("regularization", "l2")),
        ({"regularization": {"label_smoothing": 1.0}}, ("regularization", "label_smoothing")),
        ({"regularization": {"max_norm": 0}}, ("regularization", "max_norm")),
        ({"training": {"grad_clip_norm": math.inf}}, ("training", "grad_clip_norm")),
        ({"epochs": 3}, ("epochs",)),
        ({"optimizer": {"learning_rate": 0.1}}, ("optimizer", "learning_rate")),
        ({"training": {"early_stopping": {"patiance": 3}}}, ("training", "early_stopping", "patiance")),
        ({"model": {"type": "mlp", "hiden": [8]}}, ("model", "hiden")),
        ({"dataset": {"name": "synthetic", "n_sample": 100}}, ("dataset", "n_sample")),
        (
            {"model": {"type": "sequential", "layers": [{"type": "linear", "bias": False}]}},
            ("model", "layers", 0, "bias"),
        ),
        (
            {"model": {"type": "sequential", "layers": [{"type": "conv3d"}, {"type": "linear"}]}},
            ("model", "layers", 0),
        ),
        ({"model": {"type": "mamba"}}, ("model",)),
        ({"dataset": {"name": "mnist"}}, ("dataset", "name")),
        ({"dataset": {"id": "../etc/passwd"}}, ("dataset", "id")),
        ({"split": {"validation": 0.5, "test": 0.45}}, ("split",)),
    ],
)
def test_bad_value_names_its_field(over: dict[str, Any], path: tuple[str | int, ...]) -> None:
    errors = errors_of(merge(BASE, over))
    assert names_field(errors, *path), errors


def test_nan_in_json_text_is_refused() -> None:
    raw = '{"dataset": {"name": "iris"}, "model": {"type": "mlp"}, "optimizer": {"lr": "NaN"}}'
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate_json(raw)
    assert names_field(info.value.errors(), "optimizer", "lr")


def test_dataset_and_model_are_required() -> None:
    errors = errors_of({"model": {"type": "mlp"}})
    assert names_field(errors, "dataset")
    errors = errors_of({"dataset": {"name": "iris"}})
    assert names_field(errors, "model")


def test_dropout_after_the_output_layer_is_refused() -> None:
    layers = [
        {"type": "linear", "out_features": 8},
        {"type": "relu"},
        {"type": "linear"},
        {"type": "dropout", "p": 0.5},
    ]
    errors = errors_of(merge(BASE, {"model": {"type": "sequential", "layers": layers}}))
    assert names_field(errors, "model")
    assert any("dropout after the output layer" in e["msg"] for e in errors)
    # the same layers with the dropout on the hidden activation are fine
    ok = [layers[0], layers[1], layers[3], layers[2]]
    make_spec(model={"type": "sequential", "layers": ok})


def test_sequential_needs_widths_on_hidden_linears() -> None:
    layers = [{"type": "linear"}, {"type": "relu"}, {"type": "linear"}]
    errors = errors_of(merge(BASE, {"model": {"type": "sequential", "layers": layers}}))
    assert any("layers.0.out_features" in e["msg"] for e in errors)


def test_momentum_only_where_it_applies() -> None:
    errors = errors_of(merge(BASE, {"optimizer": {"name": "adam", "momentum": 0.9}}))
    assert names_field(errors, "optimizer")


def test_early_stopping_on_validation_needs_a_validation_split() -> None:
    over = {"split": {"validation": 0.0}, "training": {"early_stopping": {"monitor": "val_loss"}}}
    errors_of(merge(BASE, over))
    make_spec(split={"validation": 0.0}, training={"early_stopping": {"monitor": "data_loss"}})
