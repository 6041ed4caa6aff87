"""Uploaded datasets: parse a CSV or NPZ file as data only, and keep it in one canonical form.

numpy only (no torch): the API parses an upload to answer with its shape, and the engine reads
the canonical file back. NPZ files are opened with allow_pickle=False: nothing uploaded is ever
unpickled. The canonical file is an NPZ with `X` (float32, 2-D, or 4-D (N, C, H, W) images),
`y` (int64 class indices, or float32 targets), `task` and `classes` (the original labels).
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Task = Literal["classification", "regression"]

# A numeric target with at most this many distinct integer values is taken as class labels.
MAX_INFERRED_CLASSES = 50


class DataError(ValueError):
    """The file cannot be used as a dataset; the message says why, for the user."""


@dataclass
class ParsedDataset:
    X: np.ndarray
    y: np.ndarray
    task: Task
    classes: np.ndarray  # original class labels as strings; empty for regression

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
    def image_shape(self) -> tuple[int, int, int] | None:
        return tuple(int(v) for v in self.X.shape[1:]) if self.X.ndim == 4 else None  # type: ignore[return-value]

    def sha256(self) -> str:
        h = hashlib.sha256()
        for arr in (self.X, self.y):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def parse_csv(
    raw: bytes, target: str | None, task: Task | None = None, *, max_rows: int, max_columns: int
) -> ParsedDataset:
    """A CSV with a header row; `target` names the column to predict (default: the last)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError("the CSV is not UTF-8 text") from e
    try:
        return _parse_csv_text(text, target, task, max_rows=max_rows, max_columns=max_columns)
    except csv.Error as e:  # a stray carriage return, a field over csv's size limit, ...
        raise DataError(f"not a readable CSV: {e}") from None


def _parse_csv_text(
    text: str, target: str | None, task: Task | None, *, max_rows: int, max_columns: int
) -> ParsedDataset:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the CSV is empty") from None
    header = [h.strip() for h in header]
    if len(header) < 2:
        raise DataError("the CSV needs a header with at least one feature column and a target column")
    if len(header) - 1 > max_columns:
        raise DataError(f"{len(header) - 1} feature columns exceed the limit of {max_columns}")
    if len(set(header)) != len(header):
        raise DataError("the CSV header repeats a column name")
    target = target or header[-1]
    if target not in header:
        raise DataError(f"target column {target!r} is not in the header ({', '.join(header[:20])})")
    t = header.index(target)
    rows: list[list[str]] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"line {line} has {len(row)} fields, the header has {len(header)} (ragged CSV)")
        rows.append(row)
        if len(rows) > max_rows:
            raise DataError(f"more than {max_rows} rows: over the limit")
    if not rows:
        raise DataError("the CSV has a header but no rows")
    features = [i for i in range(len(header)) if i != t]
    X = np.empty((len(rows), len(features)), dtype=np.float32)
    for r, row in enumerate(rows):
        for j, i in enumerate(features):
            try:
                X[r, j] = float(row[i])
            except ValueError:
                raise DataError(f"line {r + 2}, column {header[i]!r}: {row[i]!r} is not a number") from None
    return _finish(X, np.array([row[t].strip() for row in rows]), task, "target column " + repr(target))


def parse_npz(raw: bytes, task: Task | None = None, *, max_rows: int, max_columns: int) -> ParsedDataset:
    """An NPZ with arrays `X` (2-D, or 4-D images (N, C, H, W)) and `y` (1-D)."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            names = set(npz.files)
            if not {"X", "y"} <= names:
                raise DataError(f"the NPZ must hold arrays 'X' and 'y'; it holds {sorted(names)}")
            X, y = npz["X"], npz["y"]
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(f"the NPZ cannot be read as plain arrays: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"not a valid NPZ file: {e}") from None
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must be numeric, not {X.dtype}")
    if X.ndim == 3:  # (N, H, W) grey images
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise DataError(f"X must be 2-D (samples, features) or 4-D images, not {X.ndim}-D")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(f"y must be 1-D with one value per row of X ({X.shape[0]}), not shape {y.shape}")
    if X.shape[0] > max_rows:
        raise DataError(f"{X.shape[0]} rows exceed the limit of {max_rows}")
    if int(np.prod(X.shape[1:])) > max_columns:
        raise DataError(f"{int(np.prod(X.shape[1:]))} features exceed the limit of {max_columns}")
    if y.dtype.kind not in "biufU":
        raise DataError(f"y must be numeric or strings, not {y.dtype}")
    return _finish(X.astype(np.float32), y.astype(str) if y.dtype.kind == "U" else y, task, "y")


def _finish(X: np.ndarray, y_raw: np.ndarray, task: Task | None, what: str) -> ParsedDataset:
    if X.shape[0] < 10:
        raise DataError(f"only {X.shape[0]} samples: at least 10 are needed to split and train")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"X holds NaN or infinite values (first at row {bad[0]})")
    numeric = _as_float(y_raw)
    if task is None:
        task = _infer_task(numeric)
    if task == "regression":
        if numeric is None:
            raise DataError(f"{what}: regression needs numeric targets")
        if not np.isfinite(numeric).all():
            raise DataError(f"{what} holds NaN or infinite values")
        return ParsedDataset(X, numeric.astype(np.float32), "regression", np.array([], dtype=str))
    if numeric is not None and not np.isfinite(numeric).all():
        raise DataError(f"{what} holds NaN or infinite values")
    if numeric is not None and np.all(numeric == np.round(numeric)):
        classes_num, y = np.unique(numeric.astype(np.int64), return_inverse=True)
        classes = classes_num.astype(str)
    else:
        classes, y = np.unique(np.asarray(y_raw).astype(str), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{what} has a single class ({classes[0]}): nothing to learn")
    if len(classes) > 1000:
        raise DataError(f"{what} has {len(classes)} classes, over the limit of 1000")
    return ParsedDataset(X, y.astype(np.int64), "classification", classes)


def _as_float(y: np.ndarray) -> np.ndarray | None:
    if y.dtype.kind in "biuf":
        return y.astype(np.float64)
    try:
        return np.array([float(v) for v in y], dtype=np.float64)
    except ValueError:
        return None


def _infer_task(numeric: np.ndarray | None) -> Task:
    if numeric is None:
        return "classification"
    integral = np.isfinite(numeric).all() and np.all(numeric == np.round(numeric))
    if integral and len(np.unique(numeric)) <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def parse_upload(
    filename: str, raw: bytes, target: str | None, task: Task | None, *, max_rows: int, max_columns: int
) -> ParsedDataset:
    """Parse by content: an NPZ is a zip archive; anything else is read as CSV."""
    if raw[:4] == b"PK\x03\x04" or filename.lower().endswith(".npz"):
        return parse_npz(raw, task, max_rows=max_rows, max_columns=max_columns)
    return parse_csv(raw, target, task, max_rows=max_rows, max_columns=max_columns)


def save_canonical(data: ParsedDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=data.X, y=data.y, task=np.array(data.task), classes=data.classes.astype(str))
    tmp.replace(path)  # atomic: a worker never reads half a file


def load_canonical(path: Path) -> ParsedDataset:
    if not path.is_file():
        raise DataError(f"dataset file {path.name} is missing")
    with np.load(path, allow_pickle=False) as npz:
        return ParsedDataset(npz["X"], npz["y"], str(npz["task"]), npz["classes"])  # type: ignore[arg-type]
