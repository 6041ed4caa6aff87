"""A batch prediction's file (worker/prediction_task.write_predictions) holds what predict
answers, row for row, across batch edges, for classification (labels and probabilities) and
regression (values in the target's units); a stop between batches leaves no file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from service.contract.spec import JobSpec
from service.data.parsed import ParsedDataset, no_classes
from worker import prediction_task
from worker.training.inference import Predictor
from worker.training.runner import run_job


def _predictor(tmp_path: Path, dataset: str) -> Predictor:
    spec = JobSpec.model_validate(
        {"dataset": {"name": dataset}, "model": {"type": "mlp", "hidden": [8]}, "training": {"epochs": 1}}
    )
    run_job(spec, tmp_path)
    weights = tmp_path / "checkpoints" / "final.safetensors"
    return Predictor(weights, json.loads(weights.with_suffix(".json").read_text()))


@pytest.mark.parametrize(("dataset", "fmt"), [("iris", "csv"), ("diabetes", "parquet")])
def test_the_file_holds_what_predict_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, fmt: str
) -> None:
    monkeypatch.setattr(prediction_task, "BATCH", 7)  # many batches, one of them partial
    predictor = _predictor(tmp_path, dataset)
    rng = np.random.default_rng(0)
    n_features = int(np.prod(predictor.input_shape))
    X = rng.normal(size=(50, n_features)).astype(np.float32)
    classification = predictor.task == "classification"
    y = (
        rng.integers(0, len(predictor.classes), 50)
        if classification
        else rng.normal(size=50).astype(np.float32)
    )
    data = ParsedDataset(
        X, y, predictor.task, np.array(predictor.classes) if classification else no_classes()
    )
    out = tmp_path / f"p.{fmt}"
    assert prediction_task.write_predictions(predictor, data, prediction_task._targets(data), out, fmt) == 50
    table = pq.read_table(out) if fmt == "parquet" else pa_csv.read_csv(out)
    assert table.num_rows == 50
    if classification:
        labels, proba = predictor.predict_proba(X.tolist())
        assert table.column("prediction").to_pylist() == labels
        got = np.column_stack([table.column(f"p_{c}").to_numpy() for c in predictor.classes])
        assert np.allclose(got, proba, atol=1e-6) and np.allclose(got.sum(1), 1, atol=1e-5)
        assert table.column("target").to_pylist() == [predictor.classes[i] for i in y]
    else:
        assert np.allclose(table.column("prediction").to_numpy(), predictor.predict(X.tolist()), rtol=1e-5)
        assert np.allclose(table.column("target").to_numpy(), y)


def test_a_stop_between_batches_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prediction_task, "BATCH", 10)
    predictor = _predictor(tmp_path, "iris")
    X = np.zeros((30, 4), np.float32)
    data = ParsedDataset(X, np.zeros(30, np.int64), "classification", np.array(predictor.classes))
    calls = iter([False, True])
    out = tmp_path / "p.csv"
    written = prediction_task.write_predictions(
        predictor, data, prediction_task._targets(data), out, "csv", lambda: next(calls)
    )
    assert written is None and not out.exists() and not list(tmp_path.glob(".p.csv*"))
