"""The client's reference preprocessing (regtrain_client.preprocessing.encode_rows, pure Python)
encodes raw rows exactly as the server's predict does (service.data.columns.encode_rows): what
an exported model is fed is what the server's own model is fed."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from regtrain_client.preprocessing import RowError, encode_rows

from service.data import columns as server

FITTED: dict[str, Any] = {
    "format": "regtrain-preprocessing/1",
    "n_features": 16,
    "columns": [
        {"name": "bill_length_mm", "type": "numeric", "impute": "mean", "fill": 43.9, "indicator": True},
        {"name": "depth", "type": "numeric", "impute": "none", "fill": None, "indicator": False},
        {"name": "island", "type": "categorical", "impute": "most_frequent", "source": "string",
         "categories": ["Biscoe", "Dream", "Torgersen"], "slots": 4, "fill": "Biscoe", "indicator": False},
        {"name": "sex", "type": "categorical", "impute": "constant", "source": "string",
         "categories": ["male", "female"], "slots": 3, "fill": None, "indicator": True},
        {"name": "year", "type": "categorical", "impute": "none", "source": "number",
         "categories": [2007, 2008, 2009], "slots": 5, "fill": None, "indicator": False},
        {"name": "comment", "type": "drop"},
    ],
}  # fmt: skip
VALUES: dict[str, list[Any]] = {
    "bill_length_mm": [39.1, 40, "41.5", None, float("nan"), "NA", "", 1e3],
    "depth": [18.7, 17, None, "n/a"],
    "island": ["Biscoe", "Dream", " Torgersen ", "Atlantis", None, "NA", 3],
    "sex": ["male", "female", "MALE", None, "."],
    "year": [2007, 2008.0, "2009", 2010, None, "2007", True],
    "comment": ["anything", None, 5],
}


def _rows(seed: int, n: int) -> list[Any]:
    rng = random.Random(seed)
    rows: list[Any] = []
    for _ in range(n):
        row = {name: rng.choice(values) for name, values in VALUES.items()}
        if rng.random() < 0.3:
            del row[rng.choice(list(row))]  # a column left out is missing
        rows.append(row if rng.random() < 0.5 or len(row) < len(VALUES) else list(row.values()))
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_the_client_encodes_rows_as_the_server_does(seed: int) -> None:
    rows = _rows(seed, 60)
    expected = server.encode_rows(FITTED, rows)
    got = encode_rows(FITTED, rows)
    assert np.asarray(got).shape == expected.shape == (60, 16)
    np.testing.assert_array_equal(np.asarray(got, np.float32), expected)
    # a whole sidecar is taken as well as its preprocessing
    assert encode_rows({"task": "classification", "preprocessing": FITTED}, rows) == got


def test_numpy_and_pandas_scalars_are_taken_as_python_values() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "bill_length_mm": [39.1, np.nan],
            "depth": [18.0, 17.0],
            "island": ["Dream", None],
            "sex": ["male", pd.NA],
            "year": [2008, 2009],
            "comment": ["x", "y"],
        }
    )
    rows = frame.to_dict("records")
    by_numpy = [dict(zip(frame.columns, r, strict=True)) for r in frame.itertuples(index=False)]
    assert encode_rows(FITTED, by_numpy) == encode_rows(FITTED, rows)
    python = [[39.1, 18.0, "Dream", "male", 2008, "x"], [None, 17.0, None, None, 2009, "y"]]
    np.testing.assert_array_equal(
        np.asarray(encode_rows(FITTED, rows), np.float32), server.encode_rows(FITTED, python)
    )


def test_rows_that_do_not_fit_name_the_row_and_column() -> None:
    with pytest.raises(RowError, match="row 1: no feature column 'species'"):
        encode_rows(FITTED, [{}, {"species": "Adelie"}])
    with pytest.raises(RowError, match="row 0: 2 values, but the model takes 6 columns"):
        encode_rows(FITTED, [[1, 2]])
    with pytest.raises(RowError, match="row 0, column 'depth': 'deep' is not a finite number"):
        encode_rows(FITTED, [{"depth": "deep"}])
    assert math.isfinite(encode_rows(FITTED, [{}])[0][0])  # every column missing: all imputed


def test_a_sidecar_without_preprocessing_gives_its_rows_back_as_floats() -> None:
    assert encode_rows({"task": "regression", "input_shape": [2]}, [[1, 2.5]]) == [[1.0, 2.5]]


def test_the_reference_needs_neither_numpy_nor_torch() -> None:
    code = (
        "import sys; sys.modules['numpy'] = None; sys.modules['torch'] = None\n"
        "import importlib.util, pathlib, regtrain_client\n"
        "from regtrain_client.preprocessing import encode_rows\n"
        "print(encode_rows({'columns': [{'name': 'a', 'type': 'numeric', 'impute': 'mean', 'fill': 1.5,"
        " 'indicator': True}]}, [[None], [2]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[[1.5, 1.0], [2.0, 0.0]]"
