"""Columns as they come: strings and gaps read, inferred, declared, and encoded with a
preprocessing fitted on the train split only (service/data/columns.py)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.contract.errors import SpecError
from service.contract.spec import JobSpec, UploadedDataset
from service.data import columns as fc
from service.data.datafile import DataError, load_canonical, parse_csv, parse_upload, save_canonical
from service.submission.jobs import encoded_width
from worker.training.data import cv_folds, split_and_standardize

LIMITS = {"max_rows": 100_000, "max_columns": 100}
PENGUINS = Path(str(files("palmerpenguins") / "data" / "penguins.csv"))


def _spec(columns: Any = "auto", **split: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"dataset": {"id": "ds-x", "columns": columns}, "model": {"type": "mlp"}, "split": split or {}}
    )


def test_the_raw_penguins_csv_is_read_as_it_comes(tmp_path: Path) -> None:
    data = parse_csv(PENGUINS, "species", **LIMITS)
    assert data.classes.tolist() == ["Adelie", "Chinstrap", "Gentoo"] and data.n_samples == 344
    by = {c["name"]: c for c in data.columns or []}
    assert [c["name"] for c in data.columns or []] == [
        "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"
    ]  # fmt: skip
    assert by["island"]["type"] == "categorical" and sorted(by["island"]["vocab"]) == [
        "Biscoe",
        "Dream",
        "Torgersen",
    ]
    assert by["sex"]["type"] == "categorical" and by["sex"]["missing"] == 11 and by["sex"]["distinct"] == 2
    assert by["bill_length_mm"]["type"] == "numeric" and by["bill_length_mm"]["missing"] == 2
    assert data.target_summary() == {
        "name": "species",
        "distribution": {"Adelie": 152, "Chinstrap": 68, "Gentoo": 124},
    }
    # the canonical file keeps the raw columns and their summary (JSON text, no pickle)
    save_canonical(data, tmp_path / "p.npz")
    back = load_canonical(tmp_path / "p.npz")
    assert back.columns == data.columns and back.sha256() == data.sha256()
    assert np.isnan(back.X).sum() == np.isnan(data.X).sum() > 0


def test_a_column_that_turns_text_past_the_first_block_is_read_again() -> None:
    rows = [f"{i},{i % 7},{'ab'[i % 2]}" for i in range(20_000)] + ["1,seven,a"]
    data = parse_csv(("a,b,y\n" + "\n".join(rows) + "\n").encode(), "y", **LIMITS)
    b = (data.columns or [])[1]
    assert b["source"] == "string" and b["distinct"] == 8 and b["type"] == "categorical"
    assert data.X[-1, 1] == b["vocab"].index("seven")


def test_parquet_strings_and_nulls() -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    table = pa.table({"n": [1.0, None] * 10, "c": ["x", None, "y", "x"] * 5, "y": [0, 1] * 10})
    pq.write_table(table, buf)
    data = parse_upload("d.parquet", buf.getvalue(), "y", None, **LIMITS)
    n, c = data.columns or []
    assert (n["missing"], c["missing"], c["type"]) == (10, 5, "categorical")


def test_the_preprocessing_never_sees_validation_or_test_rows() -> None:
    """`tag` is unique per row: the categories fitted are exactly the train rows' tags, every
    validation and test row is "other", and the numeric fill is the train rows' mean."""
    n = 100
    rows = [f"t{i},{'' if i % 10 == 0 else i},{'ab'[i % 2]}" for i in range(n)]
    data = parse_csv(("tag,v,y\n" + "\n".join(rows) + "\n").encode(), "y", **LIMITS)
    prepared = split_and_standardize(_spec({"tag": {"type": "categorical"}}), data)
    pre = prepared.preprocessing
    assert pre is not None
    tag, v = pre["columns"]
    seen = {int(t[1:]) for t in tag["categories"]}
    assert len(seen) == len(prepared.X_train) == 60
    train_values = [i for i in seen if i % 10]
    assert v["fill"] == pytest.approx(np.mean(train_values))
    # held-out rows: their tag is in no slot of the train's categories, so "other" is hot
    other = tag["slots"] - 1
    raw = fc.transform(pre, data.columns or [], data.X)
    held = [i for i in range(n) if i not in seen]
    assert raw[held, other].tolist() == [1.0] * len(held)
    assert raw[sorted(seen), other].sum() == 0
    # each fold of a cross validation fits on its own train part
    folds = cv_folds(_spec({"tag": {"type": "categorical"}}), data, 4)
    fitted = [{c for c in f.preprocessing["columns"][0]["categories"]} for f in folds if f.preprocessing]
    assert len(fitted) == 4 and all(len(f) == len(folds[0].X_train) for f in fitted)
    assert len(set.union(*fitted)) == 80 > max(len(f) for f in fitted)


def test_the_width_known_at_submit_is_the_width_trained() -> None:
    data = parse_csv(PENGUINS, "species", **LIMITS)
    for declared in ("auto", {"year": {"type": "categorical"}, "sex": {"type": "drop"}}):
        spec = _spec(declared)
        width = encoded_width(data.columns, spec.dataset, ("body", "dataset", "columns"))
        assert width == split_and_standardize(spec, data).shape.n_features
    # island 3+1, four numbers with gaps 4×2, sex 2+1 + indicator, year 1
    assert encoded_width(data.columns, _spec().dataset, ()) == 4 + 8 + 4 + 1


def test_declared_columns_that_cannot_be_used_are_all_named() -> None:
    data = parse_csv(PENGUINS, "species", **LIMITS)
    declared = {
        "island": {"type": "numeric"},
        "sex": {"type": "text"},
        "year": {"encode": "embedding"},
        "nope": {"type": "drop"},
        "body_mass_g": {"impute": "none"},
    }
    with pytest.raises(SpecError) as e:
        encoded_width(data.columns, UploadedDataset(id="x", columns=declared), ("body", "dataset", "columns"))
    for name in ("island", "sex", "year", "nope", "body_mass_g"):
        assert repr(name) in e.value.message
    # the limit on encoded features names the widest columns
    rows = [f"c{i},{i % 2}" for i in range(300)]
    wide = parse_csv(("tag,y\n" + "\n".join(rows) + "\n").encode(), "y", **LIMITS)
    assert (wide.columns or [])[0]["type"] == "text"  # auto: many distinct strings, left out
    with pytest.raises(fc.ColumnsError, match="'tag': encodes to 257 features"):
        fc.plan(wide.columns or [], {"tag": {"type": "categorical"}}, max_features=100)


def test_raw_rows_as_lists_or_objects() -> None:
    data = parse_csv(PENGUINS, "species", **LIMITS)
    pre = split_and_standardize(_spec(), data).preprocessing
    assert pre is not None
    json.dumps(pre)  # plain JSON
    as_list = ["Dream", None, "NA", 200, "4000", "female", 2008]
    as_object = {
        "island": "Dream",
        "bill_depth_mm": "NA",
        "flipper_length_mm": 200,
        "body_mass_g": 4000,
        "sex": "female",
        "year": 2008,
    }
    a, b = fc.encode_rows(pre, [as_list, as_object])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (pre["n_features"],)
    island = pre["columns"][0]
    assert a[: island["slots"]].tolist() == [1.0 if c == "Dream" else 0.0 for c in island["categories"]] + [
        0.0
    ]
    mars = fc.encode_rows(pre, [{"island": "Mars"}])[0]
    assert mars[island["slots"] - 1] == 1.0  # an island never seen: "other"
    for bad, message in (
        ([["Dream"]], "1 values, but the model takes 7 columns"),
        ([{"beak": 1}], "no feature column 'beak'"),
        ([{"bill_length_mm": "long"}], "column 'bill_length_mm': 'long' is not a finite number"),
        (["x"], "a list of values or an object"),
    ):
        with pytest.raises(fc.RowError, match=message):
            fc.encode_rows(pre, bad)


def test_declared_columns_on_an_npz_are_refused() -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((20, 2)), y=np.arange(20) % 2)
    data = parse_upload("d.npz", buf.getvalue(), None, None, **LIMITS)
    with pytest.raises(DataError, match="only a CSV or Parquet dataset"):
        split_and_standardize(_spec({"a": {"type": "drop"}}), data)


def test_another_file_of_the_same_columns_is_encoded_by_its_own_vocab() -> None:
    """A batch prediction's file: its string codes index its own vocab, matched by value."""
    train = parse_csv(
        b"c,n,y\n" + b"".join(f"{'ab'[i % 2]},{i},{i % 2}\n".encode() for i in range(40)), "y", **LIMITS
    )
    pre = split_and_standardize(_spec(), train).preprocessing
    assert pre is not None
    other = parse_csv(
        b"c,n,y\n" + b"".join(f"{'zba'[i % 3]},{i},{i % 2}\n".encode() for i in range(30)), "y", **LIMITS
    )
    encoded = fc.transform(pre, other.columns or [], other.X)
    np.testing.assert_array_equal(encoded, fc.encode_rows(pre, [["zba"[i % 3], i] for i in range(30)]))
    text = parse_csv(b"c,n,y\n" + b"".join(f"a,x{i},{i % 2}\n".encode() for i in range(30)), "y", **LIMITS)
    with pytest.raises(fc.RowError, match="column 'n' holds strings"):
        fc.transform(pre, text.columns or [], text.X)


def test_the_clients_reference_encoding_agrees() -> None:
    """regtrain_client.preprocessing (pure Python, for exports) encodes raw rows as predict does."""
    from regtrain_client.preprocessing import encode_rows as client_encode

    data = parse_csv(PENGUINS, "species", **LIMITS)
    pre = split_and_standardize(_spec({"year": {"type": "categorical"}}), data).preprocessing
    assert pre is not None
    rows: list[Any] = [
        ["Dream", None, "NA", 200, "4000", "female", 2008],
        {"island": "Mars", "sex": None, "year": "2009"},
        ["Biscoe", 50.1, 15.0, 220, 5500, "", 2010],
    ]
    np.testing.assert_allclose(np.asarray(client_encode(pre, rows)), fc.encode_rows(pre, rows), rtol=1e-6)


def test_hostile_names_and_values_stay_bounded() -> None:
    long = "x" * 301
    with pytest.raises(DataError, match="1 column names are longer than 300 characters: 'xxx"):
        parse_csv(
            f"{long},y\n".encode() + b"".join(f"{i},{i % 2}\n".encode() for i in range(20)), "y", **LIMITS
        )
    # a value past 200 characters is kept out of the vocab ("other"); many string columns
    # share MAX_TOTAL_VOCAB, so the summary kept in the dataset's row stays bounded
    rows = [
        ",".join([("v" * 250 if i % 2 else "short"), *(f"w{i % 200}" for _ in range(99)), str(i % 2)])
        for i in range(400)
    ]
    header = ",".join(["big", *(f"c{k}" for k in range(99)), "y"])
    data = parse_csv((header + "\n" + "\n".join(rows) + "\n").encode(), "y", **LIMITS)
    big, *rest = data.columns or []
    assert big["vocab"] == ["short"] and big["type"] == "categorical" and data.X[1, 0] == -1
    assert all(len(c["vocab"]) == fc.MAX_TOTAL_VOCAB // 100 for c in rest)
    assert sum(len(c["vocab"]) for c in data.columns or []) <= fc.MAX_TOTAL_VOCAB


def test_a_file_with_a_string_at_the_end_of_every_column_costs_a_few_passes() -> None:
    rows = [",".join([*(f"{i % 5}" for _ in range(8)), "NA", str(i % 2)]) for i in range(20_000)]
    rows.append(",".join([*(f"s{k}" for k in range(6)), "7", "", "NA", "1"]))
    header = ",".join([*(f"c{k}" for k in range(9)), "y"])
    data = parse_csv((header + "\n" + "\n".join(rows) + "\n").encode(), "y", **LIMITS)
    sources = [c["source"] for c in data.columns or []]
    assert sources == ["string"] * 6 + ["number"] * 3
    assert [c["missing"] for c in data.columns or []][6:] == [0, 1, 20_001]
    assert data.X[-1, 6] == 7 and np.isnan(data.X[-1, 7])


def test_rows_of_numbers_take_the_array_path_and_encode_as_the_general_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted = {
        "columns": [
            {"name": f"p{i}", "type": "drop" if i == 3 else "numeric", "fill": 0.5, "indicator": i % 2 == 0}
            for i in range(12)
        ]
    }
    rows = np.random.default_rng(0).integers(0, 255, (50, 12)).tolist()
    fast = fc._numeric_rows(fitted["columns"], rows)
    assert fast is not None and fast.dtype == np.float32
    assert fc._numeric_rows(fitted["columns"], [[None] * 12]) is None  # a gap: the general path
    with pytest.raises(fc.RowError, match="row 1, column 'p5'"):
        fc.encode_rows(fitted, [[1.0] * 12, [1.0] * 5 + [float("inf")] + [1.0] * 6])
    monkeypatch.setattr(fc, "_numeric_rows", lambda *_: None)
    assert np.array_equal(fast, fc.encode_rows(fitted, rows))
