"""Uploaded datasets: parse a CSV, Parquet or NPZ file as data only, and keep it in one canonical form.

No torch: the API parses an upload to answer with its shape, and the engine reads the canonical
file back. The readers live in service.data.tabular (CSV and Parquet, through pyarrow) and
service.data.npzfile (NPZ, checked from its headers first); the labels' rules in service.data.parsed. The
canonical file is an NPZ with `X` (float32, 2-D, or 4-D (N, C, H, W) images), `y` (int64 class
indices, or float32 targets), `task` and `classes` (the original labels, with their type), and
for a CSV or Parquet file `columns` (JSON text: the column summary of service.data.columns; X
then holds the raw columns, gaps and string codes, encoded by each job on its train split) and,
for each string column j, `text_j` and `text_j_offsets` (its raw values as UTF-8 bytes and their
offsets: what a text column's tokenizer reads; ParsedDataset.texts), and for frames (an NPZ
with `lengths`) `lengths`, X then N×T×F.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from service.data.parsed import DataError, Limits, ParsedDataset, Task

__all__ = [
    "DataError",
    "Limits",
    "ParsedDataset",
    "load_canonical",
    "parse_csv",
    "parse_npz",
    "parse_parquet",
    "parse_upload",
    "save_canonical",
]

Source = bytes | BinaryIO | Path
PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def _limits(
    max_rows: int, max_columns: int, max_bytes: int | None, max_text_bytes: int | None = None
) -> Limits:
    return Limits(
        max_rows=max_rows, max_columns=max_columns, max_bytes=max_bytes, max_text_bytes=max_text_bytes
    )


def parse_csv(
    source: Source,
    target: str | None,
    task: Task | None = None,
    *,
    max_rows: int,
    max_columns: int,
    max_bytes: int | None = None,
    max_text_bytes: int | None = None,
) -> ParsedDataset:
    from service.data.tabular import parse_csv as read  # pyarrow: loaded by the first upload only

    return read(source, target, task, limits=_limits(max_rows, max_columns, max_bytes, max_text_bytes))


def parse_parquet(
    source: Source,
    target: str | None,
    task: Task | None = None,
    *,
    max_rows: int,
    max_columns: int,
    max_bytes: int | None = None,
    max_text_bytes: int | None = None,
) -> ParsedDataset:
    from service.data.tabular import parse_parquet as read

    return read(source, target, task, limits=_limits(max_rows, max_columns, max_bytes, max_text_bytes))


def parse_npz(
    source: Source, task: Task | None = None, *, max_rows: int, max_columns: int, max_bytes: int | None = None
) -> ParsedDataset:
    from service.data.npzfile import parse_npz as read

    return read(source, task, limits=_limits(max_rows, max_columns, max_bytes))


def _head(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source[:8]
    if isinstance(source, Path):
        with source.open("rb") as f:
            return f.read(8)
    source.seek(0)
    head = source.read(8)
    source.seek(0)
    return head


def file_format(filename: str, source: Source) -> str:
    """ "parquet", "npz" or "csv": by content first (magic bytes), then by the name's suffix."""
    head, name = _head(source), filename.lower()
    if head.startswith(PARQUET_MAGIC) or name.endswith((".parquet", ".pq")):
        return "parquet"
    if head.startswith((ZIP_MAGIC, NPY_MAGIC)) or name.endswith((".npz", ".npy")):
        return "npz"  # a bare .npy is refused there, with the reason
    return "csv"


def parse_upload(
    filename: str,
    source: Source,
    target: str | None,
    task: Task | None,
    *,
    max_rows: int,
    max_columns: int,
    max_bytes: int | None = None,
    max_text_bytes: int | None = None,
) -> ParsedDataset:
    """Parse by content (a Parquet or zip file's magic bytes), else by suffix; CSV otherwise.
    `max_text_bytes`: the raw strings kept for text columns (default: this process's
    REGTRAIN_TEXT_MAX_BYTES)."""
    fmt = file_format(filename, source)
    if fmt == "npz":
        return parse_npz(source, task, max_rows=max_rows, max_columns=max_columns, max_bytes=max_bytes)
    parse = parse_parquet if fmt == "parquet" else parse_csv
    return parse(
        source,
        target,
        task,
        max_rows=max_rows,
        max_columns=max_columns,
        max_bytes=max_bytes,
        max_text_bytes=max_text_bytes,
    )


def save_canonical(data: ParsedDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a dot file: what a cache folder's eviction never counts, as it is not yet an entry
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    classes = data.classes if data.classes.dtype.kind in "biufU" else data.classes.astype(str)
    arrays: dict[str, Any] = {"X": data.X, "y": data.y, "task": np.array(data.task), "classes": classes}
    if data.columns is not None:
        arrays["columns"] = np.array(json.dumps(data.columns))
    for j, (text, offsets) in (data.texts or {}).items():
        arrays[f"text_{j}"], arrays[f"text_{j}_offsets"] = text, offsets
    if data.lengths is not None:
        arrays["lengths"] = data.lengths
    np.savez(tmp, **arrays)
    tmp.replace(path)  # atomic: a worker never reads half a file


def load_canonical(path: Path) -> ParsedDataset:
    if not path.is_file():
        raise DataError(f"dataset file {path.name} is missing")
    with np.load(path, allow_pickle=False) as npz:
        task: Task = "classification" if str(npz["task"]) == "classification" else "regression"
        columns = json.loads(str(npz["columns"])) if "columns" in npz.files else None
        texts = {
            int(k[5:]): (npz[k], npz[f"{k}_offsets"])
            for k in npz.files
            if k.startswith("text_") and k[5:].isdigit() and f"{k}_offsets" in npz.files
        }
        lengths = npz["lengths"] if "lengths" in npz.files else None
        return ParsedDataset(
            npz["X"], npz["y"], task, npz["classes"], columns, texts=texts or None, lengths=lengths
        )
