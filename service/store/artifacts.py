"""The artifact store: every file a job or an upload leaves behind, under one key scheme.

Keys are `jobs/{job_id}/checkpoints/NAME.safetensors` (+ NAME.json, NAME.state.*),
`jobs/{job_id}/exports/…` and `datasets/{dataset_id}.npz`. Two backends:

- a local folder (the default: REGTRAIN_DATA_DIR itself), where a key is the file the worker
  wrote, so nothing is copied and `regtrain up` works as it always has;
- an S3-compatible bucket (REGTRAIN_ARTIFACTS_URL=s3://bucket/prefix; endpoint, region and
  credentials from the AWS_* variables), through obstore, where each process puts what it
  wrote, a worker pulls a job's resume point into its scratch, and both read everything else
  (the API checkpoints and exports, a worker the uploads it trains on) through copies in
  data_dir/cache/artifacts, bounded by REGTRAIN_CACHE_MAX_BYTES (service.data.file_cache).

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
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import obstore

from service.data.buckets import s3_store
from service.data.file_cache import FileCache
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
        self.cache = FileCache(settings.cache_dir, settings.cache_max_bytes)
        self.cache_dir = settings.cache_dir / "artifacts"

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
            if self.remote:
                self.cache_path(key).unlink(missing_ok=True)
        if self.remote and keys:
            obstore.delete(self._store, keys)

    def delete_prefix(self, prefix: str) -> None:
        """Every object under `prefix/` (a job's folder), and this process's copies of them."""
        local = _inside(self.data_dir, prefix)
        shutil.rmtree(local, ignore_errors=True)
        if self.remote:
            shutil.rmtree(_inside(self.cache_dir, prefix), ignore_errors=True)
            keys = [m["path"] for chunk in obstore.list(self._store, prefix + "/") for m in chunk]
            if keys:
                obstore.delete(self._store, keys)

    # --- reading --------------------------------------------------------------------------

    @contextmanager
    def cached(self, key: str, sha256: str | None = None, companions: tuple[str, ...] = ()) -> Iterator[Path]:
        """A local file holding the key's object, for the block's duration: the artifact itself
        (local backend), or this process's cached copy, downloaded when missing or when its
        sha256 is not the one the store recorded (a `best` written again) and kept from
        eviction while the block runs; `companions` (a sidecar) come along whenever it is
        downloaded, so the two always belong together (in the same folder)."""
        if not self.remote:
            path = self.local_path(key)
            if not path.is_file():
                raise ArtifactMissing(key)
            yield path
            return
        with self.cache.hold(lambda: self._cached_copy(key, sha256, companions), list) as paths:
            yield paths[0]

    def _cached_copy(self, key: str, sha256: str | None, companions: tuple[str, ...]) -> list[Path]:
        path = self.cache_path(key)
        others = [self.cache_path(c) for c in companions]
        fresh = path.is_file() and (sha256 is None or file_sha256(path) == sha256)
        if not (fresh and all(p.is_file() for p in others)):
            for other, dest in zip(companions, others, strict=True):
                _atomic_copy(self.stream(other)[1], dest)
            _atomic_copy(self.stream(key)[1], path)
            self.cache.trim(keep=[path, *others])
        return [path, *others]

    def exists(self, key: str) -> bool:
        """Whether the key holds an object (a HEAD on a bucket: nothing is copied)."""
        if not self.remote:
            return self.local_path(key).is_file()
        try:
            obstore.head(self._store, key)
        except FileNotFoundError:
            return False
        return True

    def cache_path(self, key: str) -> Path:
        """Where this process keeps its copy of the key's object: in the bounded cache on a
        bucket (a file made here to be put, such as an export, is written there too), the
        artifact itself on the local backend."""
        return _inside(self.cache_dir, key) if self.remote else self.local_path(key)

    def pull(self, key: str) -> Path:
        """The key's object at its place in this process's data dir, outside the cache: what a
        worker's job reads as its own scratch (its resume point), removed with the job's
        scratch rather than by eviction."""
        path = self.local_path(key)
        if not self.remote:
            if not path.is_file():
                raise ArtifactMissing(key)
        elif not path.is_file():
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
            return os.fstat(f.fileno()).st_size, file_chunks(f)
        try:
            result = obstore.get(self._store, key)
        except FileNotFoundError:
            raise ArtifactMissing(key) from None
        return int(result.meta["size"]), (bytes(chunk) for chunk in result.stream(CHUNK))

    def presigned_url(self, key: str) -> str:
        return obstore.sign(self._store, "GET", key, PRESIGN_FOR)


def file_chunks(f: BinaryIO) -> Iterator[bytes]:
    """An open file's bytes in chunks, closed at the end."""
    with f:
        yield from iter(lambda: f.read(CHUNK), b"")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for chunk in file_chunks(path.open("rb")):
        h.update(chunk)
    return h.hexdigest()


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def predictions_key(job_id: str, prediction_id: str, fmt: str) -> str:
    """A batch prediction's file, in its job's folder: removed with the job."""
    return f"{job_prefix(job_id)}/predictions/{prediction_id}.{fmt}"


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
