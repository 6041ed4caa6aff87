"""Feature columns as they come: numbers, strings and gaps, and the preprocessing fitted on them.

numpy only (no sklearn, no torch): the API computes a job's encoded width at submit and applies a
checkpoint's preprocessing at predict with the functions here, and the engine fits it on the
train split with them (worker.training.data, at the point where it fits the standardization),
so the three can never disagree.

The canonical matrix of a CSV or Parquet upload keeps one float32 column per feature column of
the file (the target excluded), in file order: a number column holds its values with NaN for a
gap; a string column holds the index of its value in the column's `vocab` (its most frequent
values, at most MAX_VOCAB), -1 for a value beyond the vocab, NaN for a gap. The column summary
(`ColumnSummary.to_dict`, kept in the canonical file and the dataset's row) says which is which.

The fitted preprocessing, stored as plain JSON in each checkpoint's sidecar under
`preprocessing` (never a pickle), is:

    {"format": "regtrain-preprocessing/1",
     "n_features": 12,                       # the encoded width, what the model takes
     "columns": [                            # every feature column of the file, in file order
       {"name": "bill_length_mm", "type": "numeric", "impute": "mean",
        "fill": 43.9,                        # the value a gap takes (null: impute "none")
        "indicator": true},                  # one more feature: 1.0 where the value was missing
       {"name": "island", "type": "categorical", "impute": "most_frequent",
        "categories": ["Biscoe", "Dream", "Torgersen"],   # seen in the train split, by frequency
        "slots": 4,                          # one-hot width: categories, padding, then "other"
        "fill": "Biscoe",                    # most_frequent: a gap is this category; constant:
                                             # a gap is "other"; none: all slots 0
        "indicator": false,
        "source": "string"},                 # the file held text ("number": the categories are
                                             # numbers, and "2007" matches 2007.0)
       {"name": "comment", "type": "drop"}]}

Encoding a row: for each column in order, numeric → [value or fill] (+ [missing]); categorical →
a one-hot of `slots` values, category i at index i, anything else (unseen in the train split, or
rare) at index slots-1 (+ [missing]); drop → nothing. A value is missing when it is null, NaN or
one of MISSING_TOKENS. The job's standardization then applies to the encoded vector. An export
whose graph takes numbers applies this in the client first (`encode_rows` is the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.settings import Settings, get_settings

ColumnType = Literal["numeric", "categorical", "text", "drop"]
Impute = Literal["mean", "median", "most_frequent", "constant", "none"]
FORMAT = "regtrain-preprocessing/1"

# One-hot slots a categorical column may take (its most frequent categories; the rest go to
# "other"): a column's width is bounded, so the model's first layer is.
MAX_CATEGORIES = 256
# The values of a string column the canonical file keeps (the rest are "beyond the vocab": -1):
# its most frequent, of at most MAX_CATEGORY_CHARS characters (a longer value is "other"), and
# at most MAX_TOTAL_VOCAB over all its string columns (a file of many string columns keeps fewer
# of each, never fewer than AUTO_CATEGORIES): the summary kept in the dataset's row is bounded.
MAX_VOCAB = MAX_CATEGORIES
MAX_CATEGORY_CHARS = 200
MAX_TOTAL_VOCAB = 20_000
# A column's name: kept, shown and echoed in errors.
MAX_NAME_CHARS = 300
# The most features a job's columns may encode to (a file with more raw columns: twice those).
MAX_ENCODED_FEATURES = 10_000
# Shown by GET /v1/datasets/{id}.
SHOWN_CATEGORIES = 50
# "auto": a string column is categorical when it has few distinct values (at most this many, or
# at most half its present values); otherwise it is free text.
AUTO_CATEGORIES = 20
# pyarrow's CSV null values (the reader's), also missing in a predict request's rows.
MISSING_TOKENS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
     "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)  # fmt: skip


@dataclass
class ColumnSummary:
    """One feature column as the reader found it."""

    name: str
    source: Literal["number", "string"]
    missing: int
    distinct: int
    vocab: list[Any] = field(default_factory=list)  # string columns: values by frequency
    mean_length: float = 0.0  # string columns: mean length of the values in the vocab
    present: int = 0  # rows with a value

    @property
    def inferred(self) -> ColumnType:
        if self.missing and self.distinct == 0:
            return "drop"  # every value missing: nothing to learn from
        if self.source == "number":
            return "numeric"
        if self.distinct <= AUTO_CATEGORIES or (
            self.distinct <= MAX_CATEGORIES and self.distinct * 2 <= self.present
        ):
            return "categorical"
        return "text"

    def to_dict(self) -> dict[str, Any]:
        """What the canonical file and the dataset's row keep (the vocab in full)."""
        return {
            "name": self.name,
            "source": self.source,
            "type": self.inferred,
            "missing": self.missing,
            "distinct": self.distinct,
            "present": self.present,
            "vocab": self.vocab,
            "mean_length": round(self.mean_length, 2),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSummary:
        return cls(
            d["name"],
            d["source"],
            int(d["missing"]),
            int(d["distinct"]),
            list(d.get("vocab") or []),
            float(d.get("mean_length") or 0.0),
            int(d.get("present") or 0),
        )


def shown(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GET /v1/datasets/{id}'s `columns`: name, inferred type, missing, distinct, categories."""
    return [
        {
            "name": c["name"],
            "type": c["type"],
            "missing": c["missing"],
            "distinct": c["distinct"],
            "categories": list(c.get("vocab") or [])[:SHOWN_CATEGORIES] if c["type"] == "categorical" else [],
        }
        for c in summary
    ]


@dataclass(frozen=True)
class Planned:
    """A column's treatment for one job: its type and imputation, and its encoded width."""

    name: str
    type: ColumnType  # "text": only in a text model's plan (one column, read as token ids)
    impute: Impute
    indicator: bool
    slots: int  # categorical: one-hot width (categories + "other"); numeric: 1; drop: 0

    @property
    def width(self) -> int:
        return self.slots + (1 if self.indicator else 0)


class ColumnsError(ValueError):
    """The declared columns cannot be used with this dataset: every problem, by column."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name!r}: {why}" for name, why in problems.items()))
        self.problems = problems


# The built-in model types that read a text column as token ids (through an embedding).
TEXT_MODEL_TYPES = frozenset(("rnn", "transformer", "conv1d"))


def takes_text(model: Any) -> bool:
    """A model that reads a text column as token ids: a built-in sequence type, or a plugin's
    config with an `embedding_dim` (the field the sequence types size their embedding with)."""
    return (
        getattr(model, "type", None) in TEXT_MODEL_TYPES or getattr(model, "embedding_dim", None) is not None
    )


@dataclass(frozen=True)
class TextBounds:
    """A text column read by a text model (worker.training.text): token ids a row keeps, words
    the vocabulary keeps (fitted on the train split), and bytes of raw strings a dataset keeps
    for its text columns. The API plans a text job at these bounds (the fitted ones are never
    larger) and a worker fits and parses at them: REGTRAIN_TEXT_MAX_TOKENS, _MAX_VOCABULARY and
    _MAX_BYTES."""

    max_tokens: int
    max_vocabulary: int
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings | None = None) -> TextBounds:
        """The bounds `settings` set; by default this process's (a worker's environment: the
        engine and a sweep's trials, which no caller hands settings, fit at these)."""
        s = settings or get_settings()
        return cls(s.text_max_tokens, s.text_max_vocabulary, s.text_max_bytes)


def text_column(planned: list[Planned]) -> str | None:
    """The text column a text model's plan reads (see plan's `text_model`), None for rows."""
    return next((p.name for p in planned if p.type == "text"), None)


def plan(
    summary: list[dict[str, Any]], declared: Any, *, max_features: int, text_model: bool = False
) -> list[Planned]:
    """Each feature column's treatment: declared (a `dataset.columns` entry: a dict or a model
    with `type`, `impute`, `encode`), else inferred ("auto"). ColumnsError lists every column
    that cannot be used, and the encoded width over `max_features`.

    With `text_model` (a model that reads token ids, `takes_text`), a file with a text column
    (declared `text`, or inferred so and not declared otherwise) is a text dataset: that one
    column is planned as "text" and every other feature column is left out ("drop": a text
    model reads one sequence of tokens; two text columns are refused). Without a text column
    the plan is the rows' plan (the model's planner then refuses rows)."""
    declared = {k: _as_dict(v) for k, v in (declared or {}).items()}
    by_name = {c["name"]: ColumnSummary.from_dict(c) for c in summary}
    not_kept = {c["name"] for c in summary if c.get("text_kept") is False}
    problems: dict[str, str] = {}
    if text_model:
        texts = [n for n, c in by_name.items() if (declared.get(n, {}).get("type") or c.inferred) == "text"]
        unknown = [n for n in declared if n not in by_name]
        if len(texts) > 1:
            problems.update(
                {
                    n: "a text model reads one text column: declare the others 'drop' or 'categorical'"
                    for n in texts
                }
            )
        elif texts and texts[0] in not_kept:
            problems[texts[0]] = (
                "its strings are beyond the bytes of text this server keeps of a dataset "
                "(REGTRAIN_TEXT_MAX_BYTES): it cannot be read as text; declare it 'categorical' or 'drop'"
            )
        elif texts and not unknown:
            return [Planned(n, "text" if n == texts[0] else "drop", "none", False, 0) for n in by_name]
    for name in declared:
        if name not in by_name:
            problems[name] = "no such feature column in the dataset (the target cannot be declared)"
    planned: list[Planned] = []
    for name, col in by_name.items():
        d = declared.get(name, {})
        kind: str = d.get("type") or col.inferred
        if kind == "text":
            if name in problems:  # a text model's second text column, named above
                continue
            if d.get("type") == "text":
                problems[name] = (
                    "type 'text' is read by a text model (model.type rnn, transformer or conv1d, "
                    "which embed tokens): declare it 'categorical' or 'drop' for this model"
                )
                continue
            kind = "drop"  # inferred free text: a row model leaves it out (the summary says "text")
        if d.get("encode") == "embedding":
            problems[name] = "encode 'embedding' is not available yet: use 'onehot'"
            continue
        impute: Impute = d.get("impute") or ("mean" if kind == "numeric" else "most_frequent")
        if kind == "drop":
            planned.append(Planned(name, "drop", "none", False, 0))
        elif kind == "numeric":
            if col.source == "string":
                # no example values: a dataset read by URI answers without its content
                problems[name] = (
                    f"holds strings ({col.distinct} distinct), not numbers: declare it categorical"
                )
            elif impute == "most_frequent":
                problems[name] = (
                    "impute 'most_frequent' is for categorical columns: use mean, median or constant"
                )
            elif impute == "none" and col.missing:
                problems[name] = f"has {col.missing} missing values and impute 'none': choose an imputation"
            else:
                planned.append(Planned(name, "numeric", impute, col.missing > 0 and impute != "none", 1))
        else:
            if impute in ("mean", "median"):
                problems[name] = (
                    f"impute {impute!r} is for numeric columns: use most_frequent, constant or none"
                )
                continue
            slots = min(col.distinct, MAX_CATEGORIES) + 1
            planned.append(Planned(name, "categorical", impute, col.missing > 0 and impute != "none", slots))
    width = sum(p.width for p in planned)
    if not problems and width > max_features:
        widest = sorted(planned, key=lambda p: -p.width)[:5]
        for p in widest:
            problems[p.name] = (
                f"encodes to {p.width} features; all columns together to {width}, over the limit of "
                f"{max_features}: drop or declare some columns"
            )
    if not problems and width == 0:
        problems["*"] = "no feature column is left to learn from (every column is dropped or text)"
    if problems:
        raise ColumnsError(problems)
    return planned


def n_features(planned: list[Planned]) -> int:
    return sum(p.width for p in planned)


def _as_dict(v: Any) -> dict[str, Any]:
    if hasattr(v, "model_dump"):
        return {k: x for k, x in v.model_dump().items() if x is not None}
    return dict(v)


def fit(planned: list[Planned], summary: list[dict[str, Any]], X: np.ndarray) -> dict[str, Any]:
    """The preprocessing fitted on `X`, the raw canonical rows of the train split only."""
    by_name = {c["name"]: ColumnSummary.from_dict(c) for c in summary}
    out: list[dict[str, Any]] = []
    for j, p in enumerate(planned):
        v = X[:, j]
        gap = np.isnan(v)
        if p.type == "drop":
            out.append({"name": p.name, "type": "drop"})
            continue
        if p.type == "numeric":
            present = v[~gap].astype(np.float64)
            fill: Any = None
            if p.impute != "none":
                if not len(present) or p.impute == "constant":
                    fill = 0.0
                else:
                    fill = float(np.median(present) if p.impute == "median" else present.mean())
            out.append(
                {
                    "name": p.name,
                    "type": "numeric",
                    "impute": p.impute,
                    "fill": fill,
                    "indicator": p.indicator,
                }
            )
            continue
        col = by_name[p.name]
        codes = v[~gap & (v >= 0)] if col.source == "string" else v[~gap]
        values, counts = np.unique(codes, return_counts=True)
        order = np.lexsort((values, -counts))[: p.slots - 1]  # most frequent first, then by value
        if col.source == "string":
            categories: list[Any] = [col.vocab[int(values[i])] for i in order]
        else:
            categories = [float(values[i]) for i in order]
        fill = None
        if p.impute == "most_frequent" and categories:
            fill = categories[0]
        out.append(
            {
                "name": p.name,
                "type": "categorical",
                "impute": p.impute,
                "categories": categories,
                "slots": p.slots,
                "fill": fill,
                "indicator": p.indicator,
                "source": col.source,
            }
        )
    return {"format": FORMAT, "n_features": n_features(planned), "columns": out}


def transform(fitted: dict[str, Any], summary: list[dict[str, Any]], X: np.ndarray) -> np.ndarray:
    """Canonical rows `X` (any split, or another file of the same columns: `summary` is that
    file's own, whose vocab its codes index) encoded as `fitted` says: float32, n_features wide.
    RowError when a column the model takes as numbers holds strings in this file."""
    by_name = {c["name"]: c for c in summary}
    parts: list[np.ndarray] = []
    for j, c in enumerate(fitted["columns"]):
        if c["type"] == "drop":
            continue
        v = X[:, j].astype(np.float64)
        gap = np.isnan(v)
        strings = by_name[c["name"]]["source"] == "string"
        if c["type"] == "numeric":
            if strings:
                raise RowError(f"column {c['name']!r} holds strings, while the model takes numbers there")
            parts.append(np.where(gap, c["fill"] if c["fill"] is not None else 0.0, v)[:, None])
        else:
            index = _category_index(c)
            other = c["slots"] - 1
            if strings:
                vocab = by_name[c["name"]].get("vocab") or []
                # code → slot: a vocab value the train split never held is "other", as is -1
                lookup = [index.get(_key(_cell(x, c)), other) for x in vocab] + [other]
                codes = np.where(gap | (v < 0), len(vocab), v).astype(np.int64)
                slot = np.asarray(lookup, dtype=np.int64)[codes]
            else:
                keys = [index.get(_key(_cell(x, c)), other) for x in v.tolist()]
                slot = np.asarray(keys, dtype=np.int64)
            parts.append(_one_hot(slot, gap, c))
        if c["indicator"]:
            parts.append(gap.astype(np.float64)[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(X), 0), np.float32)


def _category_index(c: dict[str, Any]) -> dict[Any, int]:
    return {_key(x): i for i, x in enumerate(c["categories"])}


def _key(x: Any) -> Any:
    """A category's lookup key: numbers as floats (2007 and 2007.0 are one), text as text."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int | float):
        return float(x)
    return str(x).strip()


def _one_hot(slot: np.ndarray, gap: np.ndarray, c: dict[str, Any]) -> np.ndarray:
    out = np.zeros((len(slot), c["slots"]), dtype=np.float64)
    other = c["slots"] - 1
    if c["impute"] == "most_frequent" and c["fill"] is not None:
        missing_slot = _category_index(c).get(_key(c["fill"]), other)
    elif c["impute"] == "constant":
        missing_slot = other
    else:
        missing_slot = -1  # "none": a gap is no category at all
    slot = np.where(gap, missing_slot, slot)
    rows = np.flatnonzero(slot >= 0)
    out[rows, slot[rows]] = 1.0
    return out


class RowError(ValueError):
    """A predict row that does not fit the columns (the message names the row and column)."""


def encode_rows(fitted: dict[str, Any], rows: list[Any]) -> np.ndarray:
    """Raw rows as a user has them, encoded as `fitted` says (the reference for exports):
    each row a list in file column order (the target left out) or an object keyed by column
    name (a column left out is missing); values numbers, strings or nulls as in the file."""
    columns = fitted["columns"]
    names = [c["name"] for c in columns]
    known = set(names)
    table: list[list[Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            unknown = [k for k in row if k not in known]
            if unknown:
                raise RowError(
                    f"row {i}: no feature column {str(unknown[0])[:100]!r} (columns: {', '.join(names)[:300]})"
                )
            table.append([row.get(n) for n in names])
        elif isinstance(row, list | tuple):
            if len(row) != len(names):
                raise RowError(
                    f"row {i}: {len(row)} values, but the model takes {len(names)} columns ({', '.join(names)[:300]})"
                )
            table.append(list(row))
        else:
            raise RowError(f"row {i}: a list of values or an object keyed by column name is needed")
    fast = _numeric_rows(columns, table)
    if fast is not None:
        return fast
    parts: list[np.ndarray] = []
    for j, c in enumerate(columns):
        if c["type"] == "drop":
            continue
        raw = [r[j] for r in table]
        gap = np.array([_missing(x) for x in raw], dtype=bool)
        if c["type"] == "numeric":
            values = np.zeros(len(raw))
            for i, x in enumerate(raw):
                if gap[i]:
                    continue
                try:
                    values[i] = float(x) if not isinstance(x, bool | list | dict) else math.nan
                except (TypeError, ValueError):
                    values[i] = math.nan
                if not math.isfinite(values[i]):
                    raise RowError(f"row {i}, column {c['name']!r}: {str(x)[:50]!r} is not a finite number")
            fill = c["fill"] if c["fill"] is not None else 0.0
            parts.append(np.where(gap, fill, values)[:, None])
        else:
            index = _category_index(c)
            other = c["slots"] - 1
            slot = np.array(
                [other if gap[i] else index.get(_key(_cell(x, c)), other) for i, x in enumerate(raw)]
            )
            parts.append(_one_hot(slot.astype(np.int64), gap, c))
        if c["indicator"]:
            parts.append(gap.astype(np.float64)[:, None])
    if not parts:
        return np.zeros((len(rows), 0), np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _numeric_rows(columns: list[dict[str, Any]], table: list[list[Any]]) -> np.ndarray | None:
    """encode_rows for the common case, all columns numbers and every value a number (what
    numpy and pandas send, 784 pixels a row): one array conversion instead of a Python step
    per value. None where a value is anything else (nulls, strings): the general path."""
    if not table or any(c["type"] not in ("numeric", "drop") for c in columns):
        return None
    try:
        values = np.asarray(table)
    except ValueError:  # ragged
        return None
    if values.ndim != 2 or values.dtype.kind not in "iuf":
        return None
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise RowError(
            f"row {i}, column {columns[j]['name']!r}: {str(values[i, j])[:50]!r} is not a finite number"
        )
    # each kept column, then a zero missing-indicator where the column has one (no value is missing)
    order: list[int] = []
    for j, c in enumerate(columns):
        if c["type"] != "drop":
            order.append(j)
            if c["indicator"]:
                order.append(-1)
    out = np.zeros((len(table), len(order)), np.float32)
    kept = [k for k, j in enumerate(order) if j >= 0]
    out[:, kept] = values[:, [j for j in order if j >= 0]]
    return out


def _cell(x: Any, c: dict[str, Any]) -> Any:
    """A predict value as the column's categories are kept: a number column's category as a
    float (a string "2007" too), a string column's as text."""
    if c.get("source") == "number" and isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    if c.get("source") == "string" and isinstance(x, int | float) and not isinstance(x, bool):
        # the file's text "2007" against a JSON number 2007 (and 2007.0)
        return str(int(x)) if float(x).is_integer() else str(x)
    return x


def _missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return isinstance(x, str) and x.strip() in MISSING_TOKENS
