"""Raw rows to the matrix an exported model takes: the reference for TorchScript and ONNX users.

An export's graph standardizes numbers itself, but what needs strings (a categorical column's
one-hot, the imputation of its gaps) cannot live in a graph. The checkpoint's sidecar keeps that
step as plain JSON under `preprocessing` (and an ONNX file in its `preprocessing` metadata); this
module applies it exactly as the server's predict does (service.data.columns.encode_rows, which a
test holds it to), in pure Python: no numpy, no torch.

    sidecar = client.sidecar(job_id, "best")
    X = encode_rows(sidecar, [{"island": "Dream", "bill_length_mm": None, ...}, ...])
    session.run(None, {"inputs": numpy.asarray(X, numpy.float32)})

The JSON (format "regtrain-preprocessing/1"): `columns`, every feature column of the file in
order, each `{"name", "type": "numeric" | "categorical" | "text" | "drop", "impute", "fill",
"indicator"}` and for a categorical one `categories` (by frequency in the train split), `slots`
(its one-hot width: categories, padding, then "other") and `source` ("number" or "string").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# What the server's reader takes for a gap (pyarrow's CSV null values), in a row's strings too.
MISSING_TOKENS = frozenset(
    {
        *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
        *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
    }
)


class RowError(ValueError):
    """A row that does not fit the columns (the message names the row and the column)."""


def encode_rows(preprocessing: Mapping[str, Any], rows: Sequence[Any]) -> list[list[float]]:
    """The rows encoded as the checkpoint's preprocessing says: each row a list in file column
    order (the target left out) or a mapping keyed by column name (a column left out is
    missing); values numbers, strings or None/NaN as in the file. `preprocessing` is the JSON or
    the whole sidecar; a sidecar without one (a built-in or NPZ dataset, whose columns are its
    features) gives the rows back as floats."""
    fitted = preprocessing if "columns" in preprocessing else preprocessing.get("preprocessing")
    if not fitted or "columns" not in fitted:
        return [[float(_native(v)) for v in row] for row in rows]
    columns = fitted["columns"]
    names = [c["name"] for c in columns]
    table = [_cells(i, row, names) for i, row in enumerate(rows)]
    out: list[list[float]] = [[] for _ in table]
    for j, c in enumerate(columns):
        if c["type"] == "drop":
            continue
        for i, cells in enumerate(table):
            x = cells[j]
            gap = _missing(x)
            if c["type"] == "numeric":
                out[i].append(
                    _number(x, i, c) if not gap else float(c["fill"] if c["fill"] is not None else 0.0)
                )
            else:
                out[i].extend(_one_hot(x, gap, c))
            if c["indicator"]:
                out[i].append(1.0 if gap else 0.0)
    return out


def _cells(i: int, row: Any, names: list[str]) -> list[Any]:
    if isinstance(row, Mapping):
        known = set(names)
        unknown = [k for k in row if k not in known]
        if unknown:
            raise RowError(
                f"row {i}: no feature column {str(unknown[0])[:100]!r} (columns: {', '.join(names)[:300]})"
            )
        return [_native(row.get(n)) for n in names]
    if isinstance(row, Sequence) and not isinstance(row, str):
        if len(row) != len(names):
            raise RowError(
                f"row {i}: {len(row)} values, but the model takes {len(names)} columns ({', '.join(names)[:300]})"
            )
        return [_native(v) for v in row]
    raise RowError(f"row {i}: a list of values or a mapping keyed by column name is needed")


def _native(x: Any) -> Any:
    """numpy's and pandas' scalars (np.int64 is no int) as Python's; their NA as None."""
    if x is not None and not isinstance(x, str | bytes) and callable(getattr(x, "item", None)):
        try:
            x = x.item()
        except (TypeError, ValueError):
            return None  # pandas.NA and the like
    if type(x).__name__ in {"NAType", "NaTType"}:
        return None
    return x


def _missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return isinstance(x, str) and x.strip() in MISSING_TOKENS


def _number(x: Any, i: int, c: Mapping[str, Any]) -> float:
    try:
        value = float(x) if not isinstance(x, bool | list | dict) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise RowError(f"row {i}, column {c['name']!r}: {str(x)[:50]!r} is not a finite number")
    return value


def _key(x: Any) -> Any:
    """A category's lookup key: numbers as floats (2007 and 2007.0 are one), text as text."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int | float):
        return float(x)
    return str(x).strip()


def _cell(x: Any, c: Mapping[str, Any]) -> Any:
    """A value as the column's categories are kept: a number column's as a float (a string
    "2007" too), a string column's as text (a number 2007 as "2007")."""
    if c.get("source") == "number" and isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    if c.get("source") == "string" and isinstance(x, int | float) and not isinstance(x, bool):
        return str(int(x)) if float(x).is_integer() else str(x)
    return x


def _one_hot(x: Any, gap: bool, c: Mapping[str, Any]) -> list[float]:
    """`slots` values: category k at k, anything else (unseen in the train split) at the last;
    a gap where its imputation puts it (most_frequent: the fill's slot; constant: "other";
    none: no slot at all)."""
    index = {_key(v): k for k, v in enumerate(c["categories"])}
    other = c["slots"] - 1
    if not gap:
        slot = index.get(_key(_cell(x, c)), other)
    elif c["impute"] == "most_frequent" and c["fill"] is not None:
        slot = index.get(_key(c["fill"]), other)
    elif c["impute"] == "constant":
        slot = other
    else:
        slot = -1
    return [1.0 if k == slot else 0.0 for k in range(c["slots"])]
