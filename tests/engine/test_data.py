"""Data preparation: seeded stratified splits, standardization fitted on the train split only."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import make_spec
from pydantic import ValidationError

from service.data.datafile import DataError, ParsedDataset
from worker.training.data import Standardization, prepare, split_and_standardize


@pytest.mark.parametrize(
    ("name", "n", "features", "classes"),
    [
        ("digits", 1797, 64, 10),
        ("iris", 150, 4, 3),
        ("wine", 178, 13, 3),
        ("breast_cancer", 569, 30, 2),
        ("diabetes", 442, 10, 1),
    ],
)
def test_builtin_datasets_split_and_standardize(name: str, n: int, features: int, classes: int) -> None:
    data = prepare(make_spec(dataset={"name": name}))
    sizes = len(data.X_train), len(data.X_val), len(data.X_test)
    assert sum(sizes) == n
    assert sizes[1] == pytest.approx(0.2 * n, abs=2) and sizes[2] == pytest.approx(0.2 * n, abs=2)
    assert data.X_train.shape[1] == features and data.shape.n_outputs == classes
    # standardized with the train split's statistics only
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=1e-4)
    std = data.X_train.std(0)
    assert np.all((np.abs(std - 1) < 1e-3) | (std < 1e-6))
    if name == "diabetes":
        assert data.task == "regression" and data.y_train.dtype == np.float32
        assert abs(float(data.y_train.mean())) < 1e-4
    else:
        assert data.task == "classification"
        # stratified: every class in every split
        for part in (data.y_train, data.y_val, data.y_test):
            assert len(np.unique(part)) == classes


def test_split_is_seeded_and_disjoint() -> None:
    a = prepare(make_spec(dataset={"name": "wine"}))
    b = prepare(make_spec(dataset={"name": "wine"}))
    np.testing.assert_array_equal(a.X_test, b.X_test)
    c = prepare(make_spec(dataset={"name": "wine"}, split={"seed": 1}))
    assert not np.array_equal(a.X_test, c.X_test)
    rows = {tuple(r) for part in (a.X_train, a.X_val, a.X_test) for r in part.round(5)}
    assert len(rows) == 178


def test_images_for_cnn_and_flat_for_mlp() -> None:
    img = prepare(make_spec(dataset={"name": "digits"}, model={"type": "cnn"}))
    assert img.X_train.shape[1:] == (1, 8, 8) and img.shape.image_shape == (1, 8, 8)
    flat = prepare(make_spec(dataset={"name": "digits"}))
    assert flat.X_train.shape[1:] == (64,)


def test_standardization_round_trips_through_its_dict() -> None:
    data = prepare(make_spec(dataset={"name": "diabetes"}))
    st = Standardization.from_dict(data.standardization.to_dict())
    np.testing.assert_allclose(st.mean, data.standardization.mean)
    assert st.target_std == data.standardization.target_std


def tiny(n: int, classes: int = 2) -> ParsedDataset:
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return ParsedDataset(X, np.arange(n) % classes, "classification", np.arange(classes).astype(str))


def test_too_few_samples_for_the_split() -> None:
    spec = make_spec(split={"validation": 0.45, "test": 0.45})
    with pytest.raises(DataError, match="too few samples"):
        split_and_standardize(spec, tiny(10))


def test_single_class_is_refused() -> None:
    with pytest.raises(DataError, match="single class"):
        split_and_standardize(make_spec(), tiny(20, classes=1))


def test_tabular_data_for_a_cnn_is_refused() -> None:
    with pytest.raises(DataError, match="image data"):
        split_and_standardize(make_spec(model={"type": "cnn"}), tiny(20))


def test_synthetic_needs_enough_features_for_its_classes() -> None:
    # refused with the spec, before any job is queued, naming the field
    with pytest.raises(ValidationError, match="n_features"):
        make_spec(dataset={"name": "synthetic", "n_features": 2, "n_classes": 8})
    make_spec(dataset={"name": "synthetic", "n_features": 3, "n_classes": 8})
