"""The classification report of a job's test split (per class precision, recall, F1 and support,
macro F1, the confusion matrix) gives scikit-learn's numbers, and `best_checkpoint_metrics` is the
`best` checkpoint's own test score."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from service.contract.spec import JobSpec
from worker.training.data import prepare
from worker.training.evaluation import class_report, confusion_matrix
from worker.training.inference import Predictor
from worker.training.runner import run_job


def _check_against_sklearn(y_true: np.ndarray, y_pred: np.ndarray, classes: list[object]) -> None:
    labels = list(range(len(classes)))
    matrix = sk_confusion(y_true, y_pred, labels=labels).tolist()
    got = class_report(matrix, classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert got["confusion_matrix"] == matrix
    assert list(got["per_class"]) == [str(c) for c in classes]
    for k, c in enumerate(classes):
        row = got["per_class"][str(c)]
        assert row["precision"] == pytest.approx(p[k]) and row["recall"] == pytest.approx(r[k])
        assert row["f1"] == pytest.approx(f[k]) and row["support"] == s[k]
    _, _, macro, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    assert got["macro_f1"] == pytest.approx(macro)


@pytest.mark.parametrize("seed", range(5))
def test_report_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 8))
    y_true = rng.integers(0, n_classes, 200)
    # mostly right, some noise: every kind of cell filled
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, n_classes, 200))
    _check_against_sklearn(y_true, y_pred, [f"c{k}" for k in range(n_classes)])


def test_a_class_never_predicted_or_absent_counts_zero_as_scikit_learn_does() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 0])  # class 2 never predicted and never present
    _check_against_sklearn(y_true, y_pred, ["Adelie", "Gentoo", "Chinstrap"])


def test_confusion_matrix_of_a_model_counts_its_argmax_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.training.evaluation.EVAL_CHUNK", 7)  # several chunks
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    X = torch.randn(50, 5)
    y = torch.randint(0, 4, (50,))
    got = confusion_matrix(model, X, y, 4, nullcontext())
    pred = model(X).argmax(1).numpy()
    assert got == sk_confusion(y.numpy(), pred, labels=range(4)).tolist()


def test_a_digits_job_reports_per_class_metrics_and_the_best_checkpoints_test_score(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"name": "digits"},
            "model": {"type": "mlp", "hidden": [16]},
            "training": {"epochs": 4, "early_stopping": {"patience": 10, "restore_best": False}},
        }
    )
    result = run_job(spec, tmp_path).result
    m = result["metrics"]
    assert list(m["per_class"]) == [str(k) for k in range(10)]
    matrix = np.array(m["confusion_matrix"])
    assert matrix.shape == (10, 10)
    n_test = int(matrix.sum())
    assert [m["per_class"][str(k)]["support"] for k in range(10)] == matrix.sum(1).tolist()
    assert np.trace(matrix) / n_test == pytest.approx(m["test_accuracy"])
    assert 0 < m["macro_f1"] <= 1
    json.dumps(result, allow_nan=False)  # what the store keeps

    # best_checkpoint_metrics: the best checkpoint's weights on the same test split, through
    # the server's own predictor
    best = result["best_checkpoint_metrics"]
    assert set(best) == set(m)
    weights = tmp_path / "checkpoints" / "best.safetensors"
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["epoch"] == result["best_epoch"]
    assert np.array(best["confusion_matrix"]).sum() == n_test
    data = prepare(spec)
    raw = data.X_test * data.standardization.std + data.standardization.mean
    predicted = Predictor(weights, sidecar).predict(raw.tolist())
    truth = [sidecar["classes"][k] for k in data.y_test.tolist()]
    accuracy = float(np.mean([a == b for a, b in zip(predicted, truth, strict=True)]))
    assert best["test_accuracy"] == pytest.approx(accuracy, abs=1.5 / n_test)  # float round trip


def test_regression_has_no_class_report(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {"dataset": {"name": "diabetes"}, "model": {"type": "mlp", "hidden": [8]}, "training": {"epochs": 2}}
    )
    result = run_job(spec, tmp_path).result
    assert "per_class" not in result["metrics"] and "test_r2" in result["metrics"]
    assert set(result["best_checkpoint_metrics"]) == set(result["metrics"])
