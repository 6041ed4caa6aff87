"""Datasets by reference: an object in an S3-compatible bucket or at an https:// URL.

The API checks a URI cheaply at submit (`head`: the object exists, its size is under the
limit); the worker, or the API registering a URI, `fetch`es it: streamed to a local file while
its sha256 is computed, never more than REGTRAIN_MAX_DATASET_BYTES read, and kept in a cache
by content hash (found again from the URI and the object's ETag and size). An https:// host is
resolved once and called on the checked address, refused when private or link-local unless
such targets are allowed, as webhooks are (service.contract.addresses).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from service.contract.addresses import pinned, resolve_target
from service.contract.spec import UriDataset
from service.data.buckets import s3_store
from service.data.datafile import file_format, parse_upload
from service.data.file_cache import FileCache
from service.data.parsed import DataError, ParsedDataset

CHUNK = 1 << 20
TIMEOUT_S = 30.0
# The bucket refuses this server: the dataset's fault (or its owner's), not an outage.
DENIED = (PermissionDeniedError, UnauthenticatedError)


@dataclass(frozen=True)
class Head:
    size_bytes: int | None
    etag: str | None


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size_bytes: int


def _s3(uri: str) -> tuple[S3Store, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3_store(f"s3://{bucket}"), key


def _https(uri: str, allow_private: bool) -> tuple[str, dict[str, str], dict[str, object]]:
    address = resolve_target(uri, allow_private)
    if address is None:
        raise DataError("the host does not resolve, or resolves to a private or link-local address")
    return pinned(uri, address)


def head(ds: UriDataset, *, allow_private: bool, max_bytes: int) -> Head:
    """The object's size and ETag, or DataError naming what is wrong (missing, refused, too
    large, an https host unreachable). A bucket that cannot be reached raises obstore's own
    error: an outage, which the caller answers 503 (the API) or retries (a worker)."""
    if ds.uri.startswith("s3://"):
        store, key = _s3(ds.uri)
        try:
            meta = obstore.head(store, key)
        except FileNotFoundError:
            raise DataError("no such object in the bucket") from None
        except DENIED:
            raise DataError("the server's credentials may not read this object") from None
        # anything else (the bucket unreachable) is no fault of the dataset: it propagates
        found = Head(int(meta["size"]), meta.get("e_tag"))
    else:
        url, headers, extensions = _https(ds.uri, allow_private)
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                r = client.head(url, headers=headers, extensions=extensions)
        except httpx.HTTPError as e:
            raise DataError(f"the URL cannot be reached: {type(e).__name__}") from None
        if r.status_code in (404, 410):
            raise DataError(f"the URL answers {r.status_code} (no such object)")
        if r.status_code != 200:
            # Many servers answer HEAD otherwise than GET (a presigned GET URL refuses HEAD;
            # a redirect is not followed, its target unchecked): nothing is known, and the GET
            # itself decides, bounded while it streams.
            return Head(None, None)
        length = r.headers.get("content-length")
        found = Head(int(length) if length and length.isdigit() else None, r.headers.get("etag"))
    if found.size_bytes is not None and found.size_bytes > max_bytes:
        raise DataError(f"the object's {found.size_bytes:,} bytes exceed the limit of {max_bytes:,}")
    return found


def _chunks(ds: UriDataset, allow_private: bool) -> Iterator[bytes]:
    if ds.uri.startswith("s3://"):
        store, key = _s3(ds.uri)
        try:
            result = obstore.get(store, key)
        except FileNotFoundError:
            raise DataError("no such object in the bucket") from None
        except DENIED:
            raise DataError("the server's credentials may not read this object") from None
        for chunk in result.stream(CHUNK):
            yield bytes(chunk)
        return
    url, headers, extensions = _https(ds.uri, allow_private)
    with (
        httpx.Client(timeout=TIMEOUT_S) as client,
        client.stream("GET", url, headers=headers, extensions=extensions) as r,
    ):
        if r.status_code != 200:  # a redirect too: its target was never checked
            raise DataError(f"the URL answers {r.status_code}")
        yield from r.iter_bytes(CHUNK)


def fetch(ds: UriDataset, cache: FileCache, *, allow_private: bool, max_bytes: int) -> Fetched:
    """The object as a local file in the cache's `datasets/` folder, named by its sha256
    (downloaded only when the URI's ETag and size are not already cached; the cache trimmed to
    its bound after a download). Read it under `cache.hold`: eviction may take it otherwise."""
    found = head(ds, allow_private=allow_private, max_bytes=max_bytes)
    cache_dir = datasets_folder(cache)
    objects, refs = cache_dir / "objects", cache_dir / "refs"
    ref = None
    if found.etag and found.size_bytes is not None:
        ref = refs / hashlib.sha256(f"{ds.uri}\n{found.etag}\n{found.size_bytes}".encode()).hexdigest()
        if ref.is_file():
            sha = ref.read_text().strip()
            path = objects / f"{sha}.{ds.format}"
            if path.is_file():
                return Fetched(path, sha, path.stat().st_size)
    objects.mkdir(parents=True, exist_ok=True)
    tmp = objects / f".{os.getpid()}-{os.urandom(4).hex()}.tmp"
    h, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as f:
            try:
                for chunk in _chunks(ds, allow_private):
                    size += len(chunk)
                    if size > max_bytes:  # a server that sent no length, or a wrong one
                        raise DataError(f"the object exceeds the limit of {max_bytes:,} bytes")
                    h.update(chunk)
                    f.write(chunk)
            except httpx.HTTPError as e:
                raise DataError(f"the URL cannot be read: {type(e).__name__}") from None
        sha = h.hexdigest()
        path = objects / f"{sha}.{ds.format}"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if ref is not None:
        refs.mkdir(parents=True, exist_ok=True)
        ref.write_text(sha)
    cache.trim(keep=[path])
    return Fetched(path, sha, size)


def datasets_folder(cache: FileCache) -> Path:
    """Where datasets by URI are cached: their objects, the refs that find them by ETag, and
    whatever a reader keeps of them (a worker's canonical files)."""
    return cache.root / "datasets"


def parse(
    ds: UriDataset, fetched: Fetched, *, max_rows: int, max_columns: int, max_bytes: int
) -> ParsedDataset:
    """The fetched object read as the format the spec declares (or its suffix names); an
    object whose content is another format is refused, not guessed. A refusal names the line
    and column, never what they hold (DataError.without_content): the object is not the
    tenant's own upload."""
    actual = file_format("", fetched.path)
    if actual != ds.format:
        raise DataError(f"format: the URI's format is {ds.format}, but the object holds {actual}")
    try:
        return parse_upload(
            f"data.{ds.format}",
            fetched.path,
            ds.target,
            ds.task,
            max_rows=max_rows,
            max_columns=max_columns,
            max_bytes=max_bytes,
        )
    except DataError as e:
        raise DataError(e.without_content) from None
