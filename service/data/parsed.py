"""A parsed dataset and what every reader shares: its limits, and how a target becomes labels.

numpy only. Class labels keep their identity and their type: integer labels stay integers
(returned as ints by predictions), strings stay strings, and floats are compared as floats
(0, 1e30 and 2e30 are three classes, never squeezed through int64).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "regression"]

# A numeric target with at most this many distinct integral values is taken as class labels.
MAX_INFERRED_CLASSES = 50
MAX_CLASSES = 1000
MIN_SAMPLES = 10
# Integral float labels up to this magnitude are exact integers and are kept as ints.
EXACT_INT = 2**53


class DataError(ValueError):
    """The file cannot be used as a dataset; the message says why, for the user.

    `without_content` says the same without any of the file's content (a cell's value, a row's
    text, a reader's message that may quote either): what a dataset read by URI answers, since
    the tenant may have reached an object it could not otherwise read. It names lines and
    columns, never what they hold. An upload (the tenant's own bytes) shows the message."""

    def __init__(self, message: str, *, without_content: str | None = None) -> None:
        super().__init__(message)
        self.without_content = message if without_content is None else without_content


@dataclass(frozen=True)
class Limits:
    """What one dataset may hold: rows, feature columns, and bytes of its arrays in memory."""

    max_rows: int
    max_columns: int
    max_bytes: int | None = None
    # Bytes of raw strings kept for text columns (REGTRAIN_TEXT_MAX_BYTES); None: this process's.
    max_text_bytes: int | None = None

    def check(self, rows: int, features: int, nbytes: int, what: str = "the data") -> None:
        if rows > self.max_rows:
            raise DataError(f"{rows} rows exceed the limit of {self.max_rows}")
        if features > self.max_columns:
            raise DataError(f"{features} feature columns exceed the limit of {self.max_columns}")
        if self.max_bytes is not None and nbytes > self.max_bytes:
            raise DataError(
                f"{what} takes {nbytes} bytes in memory, over the limit of {self.max_bytes} "
                "(REGTRAIN_MAX_DATASET_BYTES)"
            )


@dataclass
class ParsedDataset:
    X: np.ndarray
    y: np.ndarray
    task: Task
    # The original class labels, sorted, with their type (int64, float64, bool or str);
    # empty for regression.
    classes: np.ndarray
    # A CSV's or Parquet file's feature columns (service.data.columns.ColumnSummary.to_dict, in
    # file order): X then holds their raw values (NaN gaps, string columns as vocab codes), which
    # a job encodes with the preprocessing it fits on its train split. None: X is the features.
    columns: list[dict[str, Any]] | None = None
    target_name: str | None = None  # a CSV's or Parquet file's target column
    # The raw values of each string column (by its index among the feature columns), for a text
    # column's tokenizer: (`data`, uint8, the values' UTF-8 bytes one after another; `offsets`,
    # int64, N+1: value i is data[offsets[i]:offsets[i+1]], a gap is empty). Plain arrays, so the
    # canonical NPZ holds them without a pickle; None where the file had no string column.
    texts: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    # Sequences of frames (an NPZ with `lengths`): X is N×T×F float32 and this each sequence's
    # length (int64, 1..T; the frames after it are zero). None for every other dataset.
    lengths: np.ndarray | None = None

    def text_values(self, j: int, start: int = 0, stop: int | None = None) -> list[str]:
        """Feature column j's raw values of rows start..stop as strings (a gap is ""); DataError
        where not kept."""
        if not self.texts or j not in self.texts:
            raise DataError(
                "this dataset keeps no text for that column (uploaded before text columns were kept, "
                "or its strings beyond the text bytes kept): it cannot be read as text"
            )
        data, offsets = self.texts[j]
        bounds = offsets[start : (len(offsets) - 1 if stop is None else stop) + 1].tolist()
        raw = data[bounds[0] : bounds[-1]].tobytes() if bounds else b""
        return [
            raw[a - bounds[0] : b - bounds[0]].decode("utf-8", "replace")
            for a, b in itertools.pairwise(bounds)
        ]

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X.shape[1:]))

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.task == "classification" else None

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """A sample's shape where it is not a flat row: (C, H, W) images, or (T, F) frames (what
        DataShape.of reads as a sequence; the dataset row's `image_shape` column keeps it)."""
        if self.lengths is not None:
            return int(self.X.shape[1]), int(self.X.shape[2])
        if self.X.ndim != 4:
            return None
        _, c, h, w = self.X.shape
        return int(c), int(h), int(w)

    def target_summary(self) -> dict[str, Any] | None:
        """GET /v1/datasets/{id}'s `target`: its name and distribution (rows per class label, or
        the values' mean, std, min and max); None without a named target column."""
        if self.target_name is None:
            return None
        if self.task == "classification":
            counts = np.bincount(self.y, minlength=len(self.classes)).tolist()
            distribution: dict[str, Any] = {
                str(c): n for c, n in zip(self.classes.tolist(), counts, strict=True)
            }
        else:
            y = self.y.astype(np.float64)
            distribution = {
                "mean": float(y.mean()),
                "std": float(y.std()),
                "min": float(y.min()),
                "max": float(y.max()),
            }
        return {"name": self.target_name, "distribution": distribution}

    def sha256(self) -> str:
        h = hashlib.sha256()
        for arr in (self.X, self.y) if self.lengths is None else (self.X, self.y, self.lengths):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)  # its bytes, not a copy
        return h.hexdigest()


def no_classes() -> np.ndarray:
    return np.array([], dtype=str)


def finish(
    X: np.ndarray,
    y_raw: np.ndarray,
    task: Task | None,
    what: str,
    *,
    columns: list[dict[str, Any]] | None = None,
) -> ParsedDataset:
    """Features X (finite, or NaN gaps in `columns`, checked by the reader) and the raw
    target (numeric, bool or str): the task, and the target as class indices or values."""
    if X.shape[0] < MIN_SAMPLES:
        raise DataError(f"only {X.shape[0]} samples: at least {MIN_SAMPLES} are needed to split and train")
    numeric = y_raw.dtype.kind in "iuf"
    if numeric and not np.isfinite(y_raw).all():
        first = int(np.argwhere(~np.isfinite(y_raw))[0][0])
        raise DataError(f"{what} holds NaN or infinite values (first at row {first + 1})")
    if task is None:
        task = _infer_task(y_raw) if numeric else "classification"
    if task == "regression":
        if not numeric:
            raise DataError(f"{what}: regression needs numeric targets, not {_kind(y_raw)}")
        return ParsedDataset(X, y_raw.astype(np.float32), "regression", no_classes(), columns)
    classes, y = np.unique(y_raw, return_inverse=True)
    if classes.dtype.kind in "iu" or (classes.dtype.kind == "f" and _exact_ints(classes)):
        classes = classes.astype(np.int64)
    if len(classes) < 2:
        raise DataError(
            f"{what} has a single class ({classes[0]}): nothing to learn",
            without_content=f"{what} has a single class: nothing to learn",
        )
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{what} has {len(classes)} classes, over the limit of {MAX_CLASSES}")
    return ParsedDataset(X, y.reshape(-1).astype(np.int64), "classification", classes, columns)


def _exact_ints(values: np.ndarray) -> bool:
    return bool(np.all(values == np.round(values)) and np.all(np.abs(values) <= EXACT_INT))


def _infer_task(y: np.ndarray) -> Task:
    integral = y.dtype.kind in "iu" or bool(np.all(y == np.round(y)))
    if integral and len(np.unique(y)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def _kind(y: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "strings", "S": "bytes"}.get(y.dtype.kind, str(y.dtype))


def check_features(X: np.ndarray, column_names: list[str] | None = None) -> None:
    """Refuse NaN and infinity, naming the first column (and line) that holds one."""
    if np.isfinite(X).all():
        return
    bad = np.argwhere(~np.isfinite(X.reshape(len(X), -1)))[0]
    row, col = int(bad[0]), int(bad[1])
    if column_names is not None:
        raise DataError(
            f"column {column_names[col]!r} holds NaN or infinite values (first at data row {row + 1})"
        )
    raise DataError(f"X holds NaN or infinite values (first at row {row}, feature {col})")
