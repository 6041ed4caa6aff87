"""NPZ files as datasets, checked from their zip and .npy headers before any array is read.

An NPZ is a zip archive of .npy members. Each member's header states its shape and dtype, so
the rows, the feature count and the bytes an array takes once decompressed are known before it
is decompressed: a 2 MB file whose X would fill 2 GB is refused in microseconds. Arrays are then
read with allow_pickle=False (nothing uploaded is ever unpickled), and exactly as many bytes as
the header states are decompressed.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

from service.data.parsed import DataError, Limits, ParsedDataset, Task, check_features, finish

Source = bytes | BinaryIO | Path

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _open(source: Source) -> zipfile.ZipFile:
    fileobj: BinaryIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
    head = _head(fileobj)
    if head.startswith(NPY_MAGIC):
        raise DataError(
            "a bare .npy array, not an NPZ archive: save X and y together with np.savez('data.npz', X=X, y=y)"
        )
    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        if head.startswith(ZIP_MAGIC):
            raise DataError(
                f"not a valid NPZ file: the zip archive is truncated or damaged ({e})",
                without_content="not a valid NPZ file: the zip archive is truncated or damaged",
            ) from None
        raise DataError(
            f"not a valid NPZ file (a zip archive of .npy arrays): {e}",
            without_content="not a valid NPZ file (a zip archive of .npy arrays)",
        ) from None


def _head(fileobj: BinaryIO | Path) -> bytes:
    if isinstance(fileobj, Path):
        with fileobj.open("rb") as f:
            return f.read(8)
    fileobj.seek(0)
    head = fileobj.read(8)
    fileobj.seek(0)
    return head


def _header(zf: zipfile.ZipFile, member: str) -> Header:
    try:
        with zf.open(member) as f:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(f)
            else:
                raise DataError(f"{member}: .npy format version {version} is not supported")
    except DataError:
        raise
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(
            f"{member} is not a readable .npy array: {e}",
            without_content=f"{member} is not a readable .npy array",
        ) from None
    if dtype.hasobject:
        raise DataError(
            f"the NPZ cannot be read as plain arrays: {member} holds Python objects, "
            "which would need pickle (refused)"
        )
    return Header(tuple(int(v) for v in shape), dtype, bool(fortran))


def _read(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    try:
        with zf.open(member) as f:
            return npy.read_array(f, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(
            f"{member} cannot be read (truncated or damaged archive?): {e}",
            without_content=f"{member} cannot be read (truncated or damaged archive?)",
        ) from None


def check_headers(zf: zipfile.ZipFile, limits: Limits) -> tuple[Header, Header]:
    """The headers of X and y, refused when the shapes or sizes are not a dataset's."""
    names = set(zf.namelist())
    if not {"X.npy", "y.npy"} <= names:
        held = sorted(n.removesuffix(".npy") for n in names)
        raise DataError(
            f"the NPZ must hold arrays 'X' and 'y'; it holds {held}",
            without_content="the NPZ must hold arrays 'X' and 'y'",
        )
    hx, hy = _header(zf, "X.npy"), _header(zf, "y.npy")
    if hx.dtype.kind not in "biuf":
        raise DataError(f"X must be numeric, not {hx.dtype}")
    if len(hx.shape) not in (2, 3, 4):
        raise DataError(
            f"X must be 2-D (samples, features) or images (N, H, W) / (N, C, H, W), not {len(hx.shape)}-D"
        )
    rows, features = hx.shape[0], math.prod(hx.shape[1:])
    if len(hy.shape) != 1 or hy.shape[0] != rows:
        raise DataError(f"y must be 1-D with one value per row of X ({rows}), not shape {list(hy.shape)}")
    if hy.dtype.kind not in "biufU":
        raise DataError(f"y must be numeric or strings, not {hy.dtype}")
    # What the arrays take once decompressed, and X again as float32 if it is stored otherwise.
    widen = rows * features * 4 if hx.dtype != np.float32 else 0
    limits.check(rows, features, hx.nbytes + hy.nbytes + widen, "the NPZ's X and y")
    return hx, hy


def parse_npz(source: Source, task: Task | None = None, *, limits: Limits) -> ParsedDataset:
    """An NPZ with arrays `X` (2-D, or images (N, H, W) / (N, C, H, W)) and `y` (1-D)."""
    with _open(source) as zf:
        check_headers(zf, limits)
        X = _read(zf, "X.npy")
        y = _read(zf, "y.npy")
    if X.ndim == 3:  # (N, H, W) grey images
        X = X[:, None]
    X = X.astype(np.float32, copy=False)
    check_features(X)
    return finish(X, y, task, "y")
