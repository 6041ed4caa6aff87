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
# The most frames one sequence may hold: the transformer's positions
# (service.contract.spec.MAX_POSITIONS), and what keeps a recurrent model's unrolled steps bounded.
MAX_FRAMES = 4096


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
    """The headers of X and y, refused when the shapes or sizes are not a dataset's. An array
    `lengths` (N,) makes a 3-D X sequences of frames N×T×F (each sequence's own length, the
    frames after it padding); without it a 3-D X is grey images (N, H, W)."""
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
    lengths_bytes = _check_lengths(zf, hx) if "lengths.npy" in names else 0
    if len(hy.shape) != 1 or hy.shape[0] != rows:
        raise DataError(f"y must be 1-D with one value per row of X ({rows}), not shape {list(hy.shape)}")
    if hy.dtype.kind not in "biufU":
        raise DataError(f"y must be numeric or strings, not {hy.dtype}")
    # What the arrays take once decompressed, and X again as float32 if it is stored otherwise.
    widen = rows * features * 4 if hx.dtype != np.float32 else 0
    limits.check(rows, features, hx.nbytes + hy.nbytes + lengths_bytes + widen, "the NPZ's X and y")
    return hx, hy


def _check_lengths(zf: zipfile.ZipFile, hx: Header) -> int:
    """The `lengths` header of a frames NPZ; the bytes it takes."""
    hl = _header(zf, "lengths.npy")
    if len(hx.shape) != 3:
        raise DataError(f"X with 'lengths' must be sequences of frames N×T×F (3-D), not {len(hx.shape)}-D")
    if hl.dtype.kind not in "iu":
        raise DataError(f"lengths must be integers (frames per sequence), not {hl.dtype}")
    if hl.shape != hx.shape[:1]:
        raise DataError(
            f"lengths must be 1-D with one value per sequence of X ({hx.shape[0]}), not shape {list(hl.shape)}"
        )
    if hx.shape[1] > MAX_FRAMES:
        raise DataError(f"X: sequences of {hx.shape[1]} frames exceed the limit of {MAX_FRAMES}")
    return hl.nbytes


def _frames(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each sequence's length, checked within 1..T; the frames after it are zeroed (padding,
    whatever the file held there)."""
    t = X.shape[1]
    if lengths.size and (lengths.min() < 1 or lengths.max() > t):
        bad = int(np.argwhere((lengths < 1) | (lengths > t))[0][0])
        raise DataError(f"lengths must lie within 1..{t} (X's T); row {bad} has {int(lengths[bad])}")
    X[np.arange(t)[None, :] >= lengths[:, None]] = 0
    return lengths.astype(np.int64)


def parse_npz(source: Source, task: Task | None = None, *, limits: Limits) -> ParsedDataset:
    """An NPZ with arrays `X` (2-D, or images (N, H, W) / (N, C, H, W)) and `y` (1-D), or
    frames: `X` N×T×F with `lengths` (N,)."""
    with _open(source) as zf:
        check_headers(zf, limits)
        X = _read(zf, "X.npy")
        y = _read(zf, "y.npy")
        lengths = _read(zf, "lengths.npy") if "lengths.npy" in zf.namelist() else None
    if X.ndim == 3 and lengths is None:  # (N, H, W) grey images
        X = X[:, None]
    X = X.astype(np.float32)  # a copy: the padding of frames is zeroed in place
    if lengths is not None:
        lengths = _frames(X, lengths)
    check_features(X)
    data = finish(X, y, task, "y")
    data.lengths = lengths
    return data
