"""Uploaded files: parsed as data only, refused with a message that says why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from service.data.datafile import (
    DataError,
    load_canonical,
    parse_csv,
    parse_npz,
    parse_upload,
    save_canonical,
)

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
        (csv_bytes("a,b,y", ["1,2,", *good_rows()]), None, "target column 'y' has 1 missing values"),
        (csv_bytes("a,b,y", [*good_rows(), "1,inf,a"]), None, "infinite"),
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


# --- label identity, missing values, Parquet, NPZ headers -------------------------------------


def test_class_labels_keep_identity_and_type() -> None:
    rows = [f"{i},{['0', '1e30', '2e30'][i % 3]}" for i in range(30)]
    huge = parse_csv(csv_bytes("a,y", rows), None, **LIMITS)
    assert huge.n_classes == 3 and huge.classes.dtype == np.float64
    assert huge.classes.tolist() == [0.0, 1e30, 2e30]
    ints = parse_csv(csv_bytes("a,y", [f"{i},{[-7, 3, 12][i % 3]}" for i in range(30)]), None, **LIMITS)
    assert ints.classes.dtype == np.int64 and ints.classes.tolist() == [-7, 3, 12]
    assert all(type(c) is int for c in ints.classes.tolist())
    floats = parse_csv(csv_bytes("a,y", [f"{i},{i % 2}.0" for i in range(30)]), None, **LIMITS)
    assert floats.classes.tolist() == [0, 1] and floats.classes.dtype == np.int64
    text = parse_csv(csv_bytes("a,y", [f"{i}, {'ab'[i % 2]} " for i in range(30)]), None, **LIMITS)
    assert text.classes.tolist() == ["a", "b"]
    mixed = parse_csv(csv_bytes("a,y", [f"{i},{['1', 'x'][i % 2]}" for i in range(30)]), None, **LIMITS)
    assert mixed.classes.tolist() == ["1", "x"]  # one non-number: every label is a string


def test_npz_labels_of_any_magnitude_stay_distinct() -> None:
    y = np.array([0.0, 1e30, 2e30] * 10)
    data = parse_npz(npz_bytes(X=np.arange(60.0).reshape(30, 2), y=y), task="classification", **LIMITS)
    assert data.n_classes == 3 and data.classes.tolist() == [0.0, 1e30, 2e30]
    big = np.array([2**62, -(2**62), 5] * 10, dtype=np.int64)
    data = parse_npz(npz_bytes(X=np.arange(60.0).reshape(30, 2), y=big), **LIMITS)
    assert data.classes.tolist() == [-(2**62), 5, 2**62]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([*good_rows(), "1,2,"], r"column 'y' has 1 missing values .* line 14"),
        ([*good_rows(), "1,-inf,a"], r"column 'b' holds infinite values \(first at line 14\)"),
        # every bad column in one message, not only the first
        (
            ["inf,-inf,", *good_rows()],
            r"column 'a' holds infinite.*column 'b' holds infinite.*column 'y' has 1 missing",
        ),
    ],
)
def test_missing_and_bad_values_name_the_column(rows: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_csv(csv_bytes("a,b,y", rows), None, **LIMITS)


def test_csv_byte_limit_is_checked_while_reading() -> None:
    with pytest.raises(DataError, match="REGTRAIN_MAX_DATASET_BYTES"):
        parse_csv(csv_bytes("a,b,y", good_rows(100)), None, **LIMITS, max_bytes=100)


def test_csv_read_whole_or_streamed_gives_the_same_dataset() -> None:
    """A file whose worst case fits the byte limit is read whole (its blocks decoded in
    parallel); a larger one streams block by block. Both give the same dataset, a column that
    turns to strings far down (a re-read) included."""
    from service.data.parsed import Limits
    from service.data.tabular import _fits_whole

    rows = [
        f"{i * 0.25 if i % 7 else ''},{' x ' if i % 3 else 'NA'},{'late' if i == 9_000 else i % 5},{'ab'[i % 2]}"
        for i in range(9_001)
    ]
    raw = csv_bytes("a,s,t,y", rows)
    exact = 9_001 * 3 * 4  # what the matrix takes: within the limit, but not the worst case
    assert _fits_whole(len(raw), 4, 3, Limits(10**6, 100))
    assert not _fits_whole(len(raw), 4, 3, Limits(10**6, 100, exact))
    whole = parse_csv(raw, None, max_rows=10**6, max_columns=100)
    streamed = parse_csv(raw, None, max_rows=10**6, max_columns=100, max_bytes=exact)
    assert np.array_equal(whole.X, streamed.X, equal_nan=True) and whole.sha256() == streamed.sha256()
    assert whole.columns == streamed.columns and np.array_equal(whole.y, streamed.y)
    assert [c["source"] for c in whole.columns or []] == ["number", "string", "string"]


def parquet_bytes(**columns: object) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def test_parquet_features_and_typed_target() -> None:
    raw = parquet_bytes(a=np.arange(20.0), b=np.arange(20, dtype=np.int32), label=np.arange(20) % 3)
    data = parse_upload("train.bin", raw, "label", None, **LIMITS)  # found by its magic bytes
    assert data.X.shape == (20, 2) and data.X.dtype == np.float32
    assert data.classes.tolist() == [0, 1, 2]
    words = parquet_bytes(a=np.arange(20.0), y=["cat", "dog"] * 10)
    assert parse_upload("w.parquet", words, None, None, **LIMITS).classes.tolist() == ["cat", "dog"]
    reg = parquet_bytes(a=np.arange(20.0), t=np.linspace(0, 1, 20))
    assert parse_upload("r.parquet", reg, "t", None, **LIMITS).task == "regression"


@pytest.mark.parametrize(
    ("columns", "target", "message"),
    [
        (
            {"a": [[1]] * 20, "b": [[2]] * 20, "y": [0, 1] * 10},
            None,
            r"column 'a' is list.*column 'b' is list",
        ),
        (
            {"a": np.arange(20.0), "y": [0, None] * 10},
            None,
            r"target column 'y' has 10 missing values .* row 2",
        ),
        ({"a": [1.0, np.inf] * 10, "y": [0, 1] * 10}, None, "column 'a' holds infinite"),
        ({"a": np.arange(20.0), "y": [0, 1] * 10}, "label", "target column 'label' is not in"),
        ({"a": np.arange(30.0), "y": [0, 1] * 15}, None, "30 rows exceed the limit of 20"),
    ],
)
def test_bad_parquet_says_why(columns: dict[str, object], target: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_upload("d.parquet", parquet_bytes(**columns), target, None, max_rows=20, max_columns=100)
    with pytest.raises(DataError, match="not a readable Parquet"):
        parse_upload("d.parquet", b"PAR1 not parquet at all", None, None, **LIMITS)


def bomb() -> bytes:
    """600 MB of zeros as X, under a MB compressed: the decompressed size is in the .npy header."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (75_000, 1000)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(1 << 24)
            for _ in range(600_000_000 // len(chunk)):
                f.write(chunk)
        zf.writestr("y.npy", npz_member(np.zeros(75_000)))
    return buf.getvalue()


def npz_member(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr)
    return out.getvalue()


def test_npz_bomb_is_refused_from_its_headers() -> None:
    import time

    raw = bomb()
    assert len(raw) < 1_000_000
    t = time.perf_counter()
    with pytest.raises(DataError, match="over the limit of 268435456"):
        parse_npz(raw, max_rows=1_000_000, max_columns=10_000, max_bytes=256 * 1024 * 1024)
    assert time.perf_counter() - t < 0.5  # headers only: nothing was decompressed
    with pytest.raises(DataError, match="75000 rows exceed"):
        parse_npz(raw, **LIMITS)


def test_bare_npy_and_truncated_npz_say_so() -> None:
    with pytest.raises(DataError, match=r"a bare \.npy array, not an NPZ archive"):
        parse_upload("data.npz", npz_member(np.zeros((20, 2))), None, None, **LIMITS)
    good = npz_bytes(X=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    for cut in (len(good) // 2, len(good) - 30, 40):
        with pytest.raises(DataError, match="truncated or damaged"):
            parse_npz(good[:cut], **LIMITS)
    assert parse_npz(good, **LIMITS).n_samples == 20
