"""run_job on every dataset and every model type; the tutorial's MLP reaches its accuracy."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_helpers import example, make_spec
from sklearn.datasets import load_iris

from service.data.datafile import parse_csv, parse_npz, save_canonical
from worker.training.checkpoints import read_sidecar
from worker.training.runner import Callbacks, run_job

CLASSIFICATION = {"test_loss", "test_accuracy", "per_class", "macro_f1", "confusion_matrix"}
REGRESSION = {"test_loss", "test_mse", "test_mae", "test_r2"}


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "digits"},
        {"name": "iris"},
        {"name": "wine"},
        {"name": "breast_cancer"},
        {"name": "diabetes"},
        {"name": "synthetic", "task": "classification", "n_samples": 300, "n_features": 8, "n_classes": 3},
        {"name": "synthetic", "task": "regression", "n_samples": 300, "n_features": 8},
    ],
    ids=lambda d: d.get("task", d["name"]),
)
def test_every_dataset_trains(tmp_path: Path, dataset: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] = []
    out = run_job(
        make_spec(dataset=dataset, training={"epochs": 2}), tmp_path, Callbacks(on_epoch=rows.append)
    )
    assert out.status == "succeeded" and len(rows) == 2
    regression = dataset["name"] == "diabetes" or dataset.get("task") == "regression"
    metrics = out.result["metrics"]
    assert set(metrics) == (REGRESSION if regression else CLASSIFICATION)
    assert all(np.isfinite(v) for v in metrics.values() if not isinstance(v, dict | list))
    val = {"val_mse", "val_mae", "val_r2"} if regression else {"val_accuracy"}
    for row in rows:
        assert val <= set(row)
        for key in (
            "train_loss",
            "data_loss",
            "penalty",
            "val_loss",
            "generalization_gap",
            "weight_l2_norm",
            "weight_sparsity",
            "lr",
            "seconds",
            "samples_per_second",
        ):
            assert key in row, key
    if not regression:
        assert 0 <= metrics["test_accuracy"] <= 1


def test_regression_metrics_are_in_target_units(tmp_path: Path) -> None:
    out = run_job(
        make_spec(
            dataset={"name": "diabetes"}, optimizer={"name": "adam", "lr": 0.01}, training={"epochs": 20}
        ),
        tmp_path,
    )
    m = out.result["metrics"]
    # diabetes targets spread over ~25..346: the mse is in those units, not standardized ones
    assert 1000 < m["test_mse"] < 10_000 and 20 < m["test_mae"] < 100
    assert 0.2 < m["test_r2"] < 1 and m["test_loss"] < 1.5


MODELS = [
    pytest.param(
        {"name": "iris"}, {"type": "mlp", "hidden": [16, 16], "dropout": 0.2, "batch_norm": True}, id="mlp"
    ),
    pytest.param(
        {"name": "digits"},
        {
            "type": "cnn",
            "channels": [4, 8],
            "hidden": [16],
            "dropout": 0.2,
            "dropout2d": 0.1,
            "batch_norm": True,
        },
        id="cnn",
    ),
    pytest.param(
        {"name": "digits"},
        {
            "type": "sequential",
            "layers": [
                {"type": "conv2d", "out_channels": 4, "padding": 1},
                {"type": "relu"},
                {"type": "max_pool2d"},
                {"type": "flatten"},
                {"type": "linear", "out_features": 16},
                {"type": "relu"},
                {"type": "linear"},
            ],
        },
        id="sequential-conv",
    ),
    pytest.param(
        {"name": "breast_cancer"},
        {
            "type": "sequential",
            "layers": [
                {"type": "linear", "out_features": 16},
                {"type": "batch_norm"},
                {"type": "gelu"},
                {"type": "dropout", "p": 0.3},
                {"type": "linear"},
            ],
        },
        id="sequential-tabular",
    ),
]


@pytest.mark.parametrize(("dataset", "model"), MODELS)
def test_every_model_type_trains(tmp_path: Path, dataset: dict[str, Any], model: dict[str, Any]) -> None:
    out = run_job(make_spec(dataset=dataset, model=model, training={"epochs": 2}), tmp_path)
    assert out.status == "succeeded" and out.result["epochs_completed"] == 2
    assert out.result["parameters"] > 0
    assert 0 <= out.result["metrics"]["test_accuracy"] <= 1


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uploaded CSV (iris, string labels) and NPZ (digits-like images) in canonical form."""
    folder = tmp_path_factory.mktemp("datasets")
    iris = load_iris()
    lines = ["a,b,c,d,species"] + [
        ",".join(f"{v:g}" for v in x) + f",{iris.target_names[t]}"
        for x, t in zip(iris.data, iris.target, strict=True)
    ]
    limits = {"max_rows": 10_000, "max_columns": 1000}
    save_canonical(parse_csv("\n".join(lines).encode(), "species", **limits), folder / "iris-csv.npz")
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    X = rng.normal(size=(200, 1, 6, 6)).astype(np.float32) + y[:, None, None, None]
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    save_canonical(parse_npz(buf.getvalue(), **limits), folder / "blobs-npz.npz")
    # labels 0, 1e30 and 2e30: three classes, as floats; labels 3, 7 and 11: ints
    for name, labels in (("huge-csv", ["0", "1e30", "2e30"]), ("int-csv", ["3", "7", "11"])):
        rows = ["a,b,label"] + [
            f"{i % 3 + rng.normal() * 0.1:.3f},{rng.normal():.3f},{labels[i % 3]}" for i in range(90)
        ]
        save_canonical(parse_csv("\n".join(rows).encode(), "label", **limits), folder / f"{name}.npz")
    return folder


@pytest.mark.parametrize(
    ("dataset_id", "model"),
    [
        ("iris-csv", {"type": "mlp", "hidden": [16]}),
        ("blobs-npz", {"type": "mlp", "hidden": [16]}),
        ("blobs-npz", {"type": "cnn", "channels": [4], "hidden": [8]}),
    ],
)
def test_uploaded_datasets_train(
    tmp_path: Path, datasets_dir: Path, dataset_id: str, model: dict[str, Any]
) -> None:
    spec = make_spec(dataset={"id": dataset_id}, model=model, training={"epochs": 2})
    out = run_job(spec, tmp_path, datasets_dir=datasets_dir)
    assert out.status == "succeeded"
    assert set(out.result["metrics"]) == CLASSIFICATION
    side = read_sidecar(tmp_path / "checkpoints", "final")
    if dataset_id == "iris-csv":
        assert side["classes"] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("dataset_id", "classes"), [("huge-csv", [0.0, 1e30, 2e30]), ("int-csv", [3, 7, 11])]
)
def test_class_labels_keep_their_type_through_to_predictions(
    tmp_path: Path, datasets_dir: Path, dataset_id: str, classes: list[Any]
) -> None:
    from worker.training.inference import Predictor

    spec = make_spec(
        dataset={"id": dataset_id}, model={"type": "mlp", "hidden": [16]}, training={"epochs": 3}
    )
    assert run_job(spec, tmp_path, datasets_dir=datasets_dir).status == "succeeded"
    side = read_sidecar(tmp_path / "checkpoints", "final")
    assert side["classes"] == classes and [type(c) for c in side["classes"]] == [type(c) for c in classes]
    predicted = Predictor(tmp_path / "checkpoints" / "final.safetensors", side).predict(
        [[0.0, 0.0], [2.0, 0.0]]
    )
    assert all(p in classes and type(p) is type(classes[0]) for p in predicted)


def test_tutorial_mlp_reaches_96_percent_on_digits(tmp_path: Path) -> None:
    out = run_job(example("digits-none", training={"device": "cpu"}), tmp_path)
    assert out.result["metrics"]["test_accuracy"] >= 0.96
    assert out.result["epochs_completed"] == 30


def test_without_validation_or_test_split(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = []
    out = run_job(
        make_spec(split={"validation": 0.0}, training={"epochs": 2}),
        tmp_path / "a",
        Callbacks(on_epoch=rows.append),
    )
    assert out.status == "succeeded" and set(out.result["metrics"]) == CLASSIFICATION
    assert rows[-1]["val_loss"] is None and rows[-1]["generalization_gap"] is None
    no_test = run_job(make_spec(split={"test": 0.0}, training={"epochs": 2}), tmp_path / "b")
    assert no_test.result["metrics"] == {}


def test_bf16_precision_runs_on_cpu(tmp_path: Path) -> None:
    out = run_job(make_spec(training={"epochs": 2, "precision": "bf16"}), tmp_path)
    assert out.status == "succeeded" and np.isfinite(out.result["metrics"]["test_loss"])
