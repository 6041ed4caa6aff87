"""CSV and Parquet files as datasets, read by pyarrow.

pyarrow's readers are C++ (the former CSV reader was a Python loop over every cell: 20× slower,
and 30× the file's size in memory). CSV is read block by block with every feature column
converted straight to float32 and copied into the feature matrix as each block arrives, so the
rows and bytes limits stop a file as soon as it crosses them and memory stays about the size of
the matrix. The target column is read as text and then typed as a whole (int64, else
float64, else strings), so that labels keep their identity (see service.data.parsed).
"""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from service.data.parsed import DataError, Limits, ParsedDataset, Task, finish

Source = bytes | BinaryIO | Path

# Measured on the 46 MB file of bench/parse.py: 256 KiB blocks parse faster than 1 MiB ones (the
# blocks in flight stay in cache) and hold a quarter of the memory in flight (11 MB, not 38).
BLOCK_BYTES = 256 << 10
SNIFF_BYTES = 64 << 10
NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|infinity|nan)$"
_RAGGED = re.compile(r"Expected \d+ columns, got \d+")
_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (\w+): invalid value '(.*)'")


def _input(source: Source) -> pa.NativeFile:
    if isinstance(source, bytes):
        return pa.BufferReader(source)
    if isinstance(source, Path):
        return pa.OSFile(str(source))
    source.seek(0)
    return pa.PythonFile(source, mode="r")


def _head(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source[:SNIFF_BYTES]
    if isinstance(source, Path):
        with source.open("rb") as f:
            return f.read(SNIFF_BYTES)
    source.seek(0)
    head = source.read(SNIFF_BYTES)
    source.seek(0)
    return head


def _header(source: Source) -> list[str]:
    head = _head(source)
    if not head.strip():
        raise DataError("the CSV is empty")
    try:  # the first block only: a multi-byte character cut at its end is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise DataError("the CSV is not UTF-8 text") from None
    # The header line alone, when the first block holds it (a header whose quoted names span
    # lines falls back to a probe of the whole first block).
    line = head[: head.index(b"\n") + 1] if b"\n" in head else None
    probe = pa.BufferReader(line) if line and b'"' not in line else _input(source)
    try:
        reader = pcsv.open_csv(probe, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES))
    except pa.ArrowInvalid as e:
        raise _csv_error(e) from None
    names = [n.strip() for n in reader.schema.names]
    reader.close()
    return names


def _csv_error(e: Exception) -> DataError:
    text = str(e)
    if "Expected" in text and "columns, got" in text:
        # pyarrow quotes the row itself after the counts
        counts = _RAGGED.search(text)
        return DataError(
            f"ragged CSV: {text.removeprefix('CSV parse error: ')[:300]}",
            without_content=f"ragged CSV: {counts[0] if counts else 'a row has another number of columns'}",
        )
    if "invalid UTF8" in text:
        return DataError("the CSV is not UTF-8 text")
    if "Empty CSV" in text:
        return DataError("the CSV is empty")
    return DataError(f"not a readable CSV: {text[:300]}", without_content="not a readable CSV")


def _target_name(names: list[str], target: str | None) -> str:
    if len(names) < 2:
        raise DataError("the data needs at least one feature column and a target column")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"the header repeats a column name ({dup!r})")
    target = target or names[-1]
    if target not in names:
        raise DataError(
            f"target column {target!r} is not in the header ({', '.join(names[:20])})",
            without_content=f"target column {target!r} is not in the header",
        )
    return target


def parse_csv(
    source: Source, target: str | None, task: Task | None = None, *, limits: Limits
) -> ParsedDataset:
    """A CSV with a header row; `target` names the column to predict (default: the last).

    Every column's type is given up front (float32 features, the target as text), so pyarrow
    infers nothing; each block's columns are copied straight into the feature matrix and the
    block is dropped, so memory stays about the matrix itself (not the matrix plus a table of
    the same size), and the limits stop a file as soon as it crosses them. Missing values are
    counted from each block's null counts (no second pass)."""
    names = _header(source)
    target = _target_name(names, target)
    features = [n for n in names if n != target]
    limits.check(0, len(features), 0)
    types = {n: pa.float32() for n in features} | {target: pa.string()}
    columns = [names.index(n) for n in features]
    t_index = names.index(target)
    matrix = _Growing(len(features), _size(source))
    labels: list[pa.Array] = []
    missing: dict[str, list[int]] = {}  # column -> [count, first line]
    try:
        reader = pcsv.open_csv(
            _input(source),
            read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, skip_rows=1, column_names=names),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True),
        )
        for batch in reader:
            start = matrix.rows
            limits.check(start + batch.num_rows, len(features), (start + batch.num_rows) * len(features) * 4)
            block = matrix.extend(batch.num_rows)
            for j, i in enumerate(columns):
                column = batch.column(i)
                if column.null_count:
                    _note_missing(missing, features[j], column, start)
                else:  # float32 without nulls: a view of arrow's buffer, copied once into X
                    block[:, j] = column.to_numpy()
            if batch.column(t_index).null_count:
                _note_missing(missing, target, batch.column(t_index), start)
            labels.append(batch.column(t_index))
    except pa.ArrowException as e:
        raise _conversion_error(e, source, names) or _csv_error(e) from None
    if matrix.rows == 0:
        raise DataError("the CSV has a header but no rows")
    for name in (*features, target):
        if name in missing:
            count, line = missing[name]
            raise DataError(
                f"column {name!r} has {count} missing values (empty, NA or NaN; first at line {line}): "
                "fill or drop them first"
            )
    X = matrix.done()
    del reader
    # pyarrow's allocator keeps the blocks it freed for reuse; the API parses an upload rarely,
    # so they go back to the system now instead of staying in its RSS
    pa.default_memory_pool().release_unused()
    _refuse_non_finite(X, features, "line", 2)
    return finish(X, _typed(pa.chunked_array(labels, pa.string())), task, f"target column {target!r}")


def _note_missing(missing: dict[str, list[int]], name: str, column: pa.Array, start: int) -> None:
    if name in missing:
        missing[name][0] += column.null_count
    else:
        first = pc.index(pc.is_null(column), True).as_py()
        missing[name] = [column.null_count, start + first + 2]


def _size(source: Source) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, Path):
        return source.stat().st_size
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size


class _Growing:
    """The float32 feature matrix, its rows unknown until the last block: allocated once from an
    estimate (the file's size over the first block's bytes per row, plus a margin), grown by
    half when a file has more rows than estimated, and trimmed in place at the end."""

    def __init__(self, width: int, file_bytes: int) -> None:
        self.width, self.file_bytes, self.rows = width, file_bytes, 0
        self._X: np.ndarray | None = None

    def extend(self, n: int) -> np.ndarray:
        if self._X is None:
            # a block holds about BLOCK_BYTES of the file; 10% more rows than that suggests
            blocks = max(1, -(-self.file_bytes // BLOCK_BYTES))
            self._X = np.empty((max(n, int(n * blocks * 1.1)), self.width), dtype=np.float32)
        elif self.rows + n > len(self._X):
            grown = np.empty((max(self.rows + n, len(self._X) * 3 // 2), self.width), dtype=np.float32)
            grown[: self.rows] = self._X[: self.rows]
            self._X = grown
        block = self._X[self.rows : self.rows + n]
        self.rows += n
        return block

    def done(self) -> np.ndarray:
        assert self._X is not None
        X = self._X
        self._X = None
        X.resize((self.rows, self.width), refcheck=False)  # in place: gives back the margin
        return X


def _conversion_error(e: Exception, source: Source, names: list[str]) -> DataError | None:
    """A value that is not a number, with its column and line (read again, for that column)."""
    m = _CONVERSION.search(str(e))
    if m is None:
        return None
    column = names[int(m[1])]
    try:
        table = pcsv.read_csv(
            _input(source),
            read_options=pcsv.ReadOptions(skip_rows=1, column_names=names),
            convert_options=pcsv.ConvertOptions(
                include_columns=[column], column_types={column: pa.string()}, strings_can_be_null=True
            ),
        )
        values = table.column(0)
        number = pc.utf8_trim_whitespace(values)
        bad = pc.invert(pc.match_substring_regex(number, NUMBER, ignore_case=True))
        line = pc.index(bad, True).as_py() + 2
    except Exception:  # the error path: say what pyarrow said
        return DataError(
            f"column {column!r}: {m[3]!r} is not a number",
            without_content=f"column {column!r}: a value is not a number",
        )
    return DataError(
        f"line {line}, column {column!r}: {m[3]!r} is not a number",
        without_content=f"line {line}, column {column!r}: the value is not a number",
    )


def parse_parquet(
    source: Source, target: str | None, task: Task | None = None, *, limits: Limits
) -> ParsedDataset:
    """A Parquet file: numeric feature columns and a target column (default: the last). The
    footer gives the rows and types, so a file over the limits is refused before it is read."""
    try:
        pf = pq.ParquetFile(source if not isinstance(source, bytes) else io.BytesIO(source))
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"not a readable Parquet file: {str(e)[:300]}", without_content="not a readable Parquet file"
        ) from None
    schema = pf.schema_arrow
    names = list(schema.names)
    target = _target_name(names, target)
    features = [n for n in names if n != target]
    rows = pf.metadata.num_rows
    limits.check(rows, len(features), rows * len(features) * 4)
    for name in features:
        t = schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DataError(f"column {name!r} is {t}, not numeric: every feature column must be")
    if rows == 0:
        raise DataError("the Parquet file has no rows")
    try:
        table = pf.read(columns=names)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"the Parquet file cannot be read: {str(e)[:300]}",
            without_content="the Parquet file cannot be read",
        ) from None
    return _dataset(table, features, target, task, line_offset=1)


def _dataset(
    table: pa.Table, features: list[str], target: str, task: Task | None, *, line_offset: int
) -> ParsedDataset:
    """The feature matrix (float32, one column at a time) and the typed target. `line_offset`
    turns a row index into the line a user sees (2 in a CSV: the header is line 1)."""
    where = "line" if line_offset == 2 else "row"
    X = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        column = table.column(name)
        _refuse_missing(column, name, where, line_offset)
        X[:, j] = column.cast(pa.float32()).to_numpy()
    _refuse_non_finite(X, features, where, line_offset)
    column = table.column(target)
    _refuse_missing(column, target, where, line_offset)
    return finish(X, _typed(column), task, f"target column {target!r}")


def _refuse_non_finite(X: np.ndarray, features: list[str], where: str, offset: int) -> None:
    """One pass over the matrix; only a matrix that fails it is searched for the first column
    (in column order, as a user reads the header) and its first row."""
    if np.isfinite(X).all():
        return
    for j, name in enumerate(features):
        bad = ~np.isfinite(X[:, j])
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"column {name!r} holds NaN or infinite values (first at {where} {row + offset})")


def _refuse_missing(column: pa.ChunkedArray, name: str, where: str, offset: int) -> None:
    if column.null_count:
        first = pc.index(pc.is_null(column), True).as_py()
        raise DataError(
            f"column {name!r} has {column.null_count} missing values (empty, NA or NaN; first at "
            f"{where} {first + offset}): fill or drop them first"
        )


def _typed(column: pa.ChunkedArray) -> np.ndarray:
    """The target as numpy with its own type: CSV text is typed here as a whole (int64, else
    float64, else strings); a Parquet column keeps its type."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pc.utf8_trim_whitespace(column)
        for numeric in (pa.int64(), pa.float64()):
            try:
                return np.asarray(text.cast(numeric).to_numpy())
            except pa.ArrowInvalid:
                continue
        return np.asarray(text.to_numpy(zero_copy_only=False)).astype(str)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return np.asarray(column.to_numpy())
    raise DataError(f"the target column is {t}: numbers, booleans or strings are needed")
