"""Uploaded files: parsed as data only, refused with a message that says why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from service.datafile import DataError, load_canonical, parse_csv, parse_npz, parse_upload, save_canonical

LIMITS = {"max_rows": 10_000, "max_columns": 100}


def csv_bytes(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def good_rows(n: int = 12) -> list[str]:
    return [f"{i * 0.5},{i % 3},{'ab'[i % 2]}" for i in range(n)]


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # np.savez pickles object arrays, which the reader must refuse
    return buf.getvalue()


def test_csv_classification_with_string_labels() -> None:
    data = parse_csv(csv_bytes("a,b,label", good_rows()), None, **LIMITS)
    assert data.task == "classification"
    assert data.X.shape == (12, 2) and data.X.dtype == np.float32
    assert list(data.classes) == ["a", "b"] and data.y.dtype == np.int64
    assert data.n_classes == 2


def test_csv_target_column_and_regression_inference() -> None:
    rows = [f"{i},{i * 0.37 + 0.01},{i % 2}" for i in range(60)]
    data = parse_csv(csv_bytes("x,t,z", rows), "t", **LIMITS)
    assert data.task == "regression" and data.y.dtype == np.float32
    np.testing.assert_allclose(data.X[:, 1], [i % 2 for i in range(60)])


@pytest.mark.parametrize(
    ("raw", "target", "message"),
    [
        (csv_bytes("a,b,y", ["1,x,0", *good_rows()]), None, "'x' is not a number"),
        (csv_bytes("a,b,y", ["1,nan,0", *good_rows()]), None, "NaN"),
        (csv_bytes("a,b,y", [*good_rows(), "1,inf,a"]), None, "NaN or infinite"),
        (csv_bytes("a,b,y", ["1,2", *good_rows()]), None, "ragged"),
        (csv_bytes("a,b,y", good_rows()), "z", "target column 'z' is not in the header"),
        (b"", None, "empty"),
        (b"a,b,y\n", None, "no rows"),
        (csv_bytes("a,b,y", [f"{i},{i},same" for i in range(12)]), None, "single class"),
        (csv_bytes("a,b,y", good_rows(4)), None, "only 4 samples"),
        (csv_bytes("a,a,y", good_rows()), None, "repeats a column"),
        (csv_bytes("y", ["1"] * 12), None, "at least one feature column"),
        (b"\xff\xfe\x00a,b", None, "not UTF-8"),
    ],
)
def test_bad_csv_says_why(raw: bytes, target: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_csv(raw, target, **LIMITS)


def test_csv_over_the_limits() -> None:
    with pytest.raises(DataError, match="limit"):
        parse_csv(csv_bytes("a,b,y", good_rows(30)), None, max_rows=20, max_columns=100)
    with pytest.raises(DataError, match="limit"):
        parse_csv(csv_bytes("a,b,y", good_rows()), None, max_rows=100, max_columns=1)


def test_npz_tabular_and_images() -> None:
    rng = np.random.default_rng(0)
    tab = parse_npz(npz_bytes(X=rng.normal(size=(20, 3)), y=np.arange(20) % 2), **LIMITS)
    assert tab.task == "classification" and tab.X.shape == (20, 3)
    img = parse_npz(npz_bytes(X=rng.normal(size=(20, 6, 6)), y=np.arange(20) % 3), **LIMITS)
    assert img.X.shape == (20, 1, 6, 6) and img.image_shape == (1, 6, 6) and img.n_features == 36


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"A": np.zeros((20, 2)), "B": np.zeros(20)}, "must hold arrays 'X' and 'y'"),
        ({"X": np.zeros((20, 2))}, "must hold arrays 'X' and 'y'"),
        ({"X": np.array([[{"a": 1}]] * 20, dtype=object), "y": np.arange(20) % 2}, "plain arrays"),
        ({"X": np.zeros((20, 2)), "y": np.array([1, "a"] * 10, dtype=object)}, "plain arrays"),
        ({"X": np.zeros((20, 2)), "y": np.arange(19) % 2}, "one value per row"),
        ({"X": np.zeros((20, 2)), "y": np.zeros((20, 2))}, "one value per row"),
        ({"X": np.array(["a"] * 40).reshape(20, 2), "y": np.arange(20) % 2}, "numeric"),
        ({"X": np.zeros(20), "y": np.arange(20) % 2}, "2-D"),
        ({"X": np.full((20, 2), np.nan), "y": np.arange(20) % 2}, "NaN"),
        ({"X": np.zeros((20, 2)), "y": np.ones(20)}, "single class"),
        ({"X": np.zeros((5, 2)), "y": np.arange(5) % 2}, "only 5 samples"),
    ],
)
def test_bad_npz_says_why(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_npz(npz_bytes(**arrays), **LIMITS)


def test_not_an_npz() -> None:
    with pytest.raises(DataError, match="not a valid NPZ"):
        parse_npz(b"PK\x03\x04 this is not a zip", **LIMITS)


def test_parse_upload_dispatches_by_content() -> None:
    raw = npz_bytes(X=np.zeros((20, 2)) + np.arange(20)[:, None], y=np.arange(20) % 2)
    assert parse_upload("data.bin", raw, None, None, **LIMITS).X.shape == (20, 2)
    assert parse_upload("data.csv", csv_bytes("a,b,y", good_rows()), None, None, **LIMITS).X.shape == (12, 2)


def test_canonical_round_trip(tmp_path: Path) -> None:
    data = parse_csv(csv_bytes("a,b,label", good_rows()), None, **LIMITS)
    path = tmp_path / "datasets" / "d1.npz"
    save_canonical(data, path)
    back = load_canonical(path)
    np.testing.assert_array_equal(back.X, data.X)
    np.testing.assert_array_equal(back.y, data.y)
    assert back.task == "classification" and list(back.classes) == ["a", "b"]
    assert back.sha256() == data.sha256()
    with pytest.raises(DataError, match="missing"):
        load_canonical(tmp_path / "datasets" / "nope.npz")
