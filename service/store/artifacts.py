"""The artifact store: every file a job or an upload leaves behind, under one key scheme.

Keys are `jobs/{job_id}/checkpoints/NAME.safetensors` (+ NAME.json, NAME.state.*),
`jobs/{job_id}/exports/…` and `datasets/{dataset_id}.npz`. Two backends:

- a local folder (the default: REGTRAIN_DATA_DIR itself), where a key is the file the worker
  wrote, so nothing is copied and `regtrain up` works as it always has;
- an S3-compatible bucket (REGTRAIN_ARTIFACTS_URL=s3://bucket/prefix; endpoint, region and
  credentials from the AWS_* variables), through obstore, where each process keeps local
  copies in its own data dir (scratch and cache only) and puts what it wrote.

A reader never sees half a file: a PUT (single or multipart) becomes visible only once complete,
a local write is a temporary file renamed, and the store's row is written after the put.
Paths are built from ids the store has confirmed (server-made) and must resolve inside their
folder, so no request can point a read or a deletion anywhere else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import obstore

from service.data.buckets import s3_store
from service.settings import Settings

CHUNK = 1 << 20
PRESIGN_FOR = timedelta(minutes=15)


class ArtifactMissing(FileNotFoundError):
    """The key holds no object."""


def _inside(folder: Path, key: str) -> Path:
    path = (folder / key).resolve()
    if not path.is_relative_to(folder.resolve()) or path == folder.resolve():
        raise ArtifactMissing(key)
    return path


def _atomic_copy(chunks: Iterator[bytes] | Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if isinstance(chunks, Path):
            shutil.copyfile(chunks, tmp)
        else:
            with tmp.open("wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class Artifacts:
    """The one way files are put, fetched, served and removed, whichever backend holds them."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self.url = settings.artifacts_url
        self.remote = bool(self.url)
        self.presign = settings.artifacts_presign and self.remote
        self._store: Any = s3_store(self.url) if self.url else None

    def local_path(self, key: str) -> Path:
        """Where the key's file lies in this process's data dir: the artifact itself on the
        local backend, this process's copy (scratch or cache) on a bucket."""
        return _inside(self.data_dir, key)

    # --- writing --------------------------------------------------------------------------

    def put(self, key: str, source: Path, *, keep_copy: bool = True) -> None:
        """Make `source` the key's object. On the local backend a file already at its key's
        place stays where it is (the worker wrote it there, atomically). On a bucket,
        keep_copy=False removes this process's copy once the bucket has it."""
        dest = self.local_path(key)
        if not self.remote:
            if source.resolve() != dest:
                _atomic_copy(source, dest)
            return
        obstore.put(self._store, key, source)
        if not keep_copy:
            source.unlink(missing_ok=True)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.local_path(key).unlink(missing_ok=True)
        if self.remote and keys:
            obstore.delete(self._store, keys)

    def delete_prefix(self, prefix: str) -> None:
        """Every object under `prefix/` (a job's folder), and this process's copies of them."""
        local = _inside(self.data_dir, prefix)
        shutil.rmtree(local, ignore_errors=True)
        if self.remote:
            keys = [m["path"] for chunk in obstore.list(self._store, prefix + "/") for m in chunk]
            if keys:
                obstore.delete(self._store, keys)

    # --- reading --------------------------------------------------------------------------

    def fetch(self, key: str, sha256: str | None = None, companions: tuple[str, ...] = ()) -> Path:
        """A local file holding the key's object: the artifact itself (local backend), or this
        process's cached copy, downloaded when missing or when its sha256 is not the one the
        store recorded (a `best` written again); `companions` (a sidecar) come along whenever
        it is downloaded, so the two always belong together."""
        path = self.local_path(key)
        if not self.remote:
            if not path.is_file():
                raise ArtifactMissing(key)
            return path
        fresh = path.is_file() and (sha256 is None or file_sha256(path) == sha256)
        if fresh and all(self.local_path(c).is_file() for c in companions):
            return path
        for other in companions:
            _atomic_copy(self.stream(other)[1], self.local_path(other))
        _atomic_copy(self.stream(key)[1], path)
        return path

    def stream(self, key: str) -> tuple[int, Iterator[bytes]]:
        """(the object's size, its bytes in chunks), without holding it whole. The object is
        opened here (a missing one raises now, not part-way through a response), and the size
        is the opened object's own, even if the key is written again meanwhile."""
        if not self.remote:
            path = self.local_path(key)
            try:
                f = path.open("rb")
            except FileNotFoundError:
                raise ArtifactMissing(key) from None
            return os.fstat(f.fileno()).st_size, _file_chunks(f)
        try:
            result = obstore.get(self._store, key)
        except FileNotFoundError:
            raise ArtifactMissing(key) from None
        return int(result.meta["size"]), (bytes(chunk) for chunk in result.stream(CHUNK))

    def presigned_url(self, key: str) -> str:
        return obstore.sign(self._store, "GET", key, PRESIGN_FOR)


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        yield from iter(lambda: f.read(CHUNK), b"")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for chunk in _file_chunks(path.open("rb")):
        h.update(chunk)
    return h.hexdigest()


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def checkpoint_key(job_id: str, relative: str) -> str:
    """A checkpoint file's key, from the path the store recorded (relative to the job's folder)."""
    return f"{job_prefix(job_id)}/{relative}"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.npz"


def remove_job_files(artifacts: Artifacts, job_id: str) -> None:
    """The job's folder: checkpoints, sidecars, resume state and exports."""
    artifacts.delete_prefix(job_prefix(job_id))


def remove_dataset_file(artifacts: Artifacts, dataset_id: str) -> None:
    artifacts.delete([dataset_key(dataset_id)])
