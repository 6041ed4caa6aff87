"""Datasets by reference: an object in an S3-compatible bucket or at an https:// URL.

The API checks a URI cheaply at submit (`head_async`: the object exists, its size is under the
limit); the worker, or the API registering a URI, fetches it: streamed to a local file while
its sha256 is computed, never more than REGTRAIN_MAX_DATASET_BYTES read (counted after any
Content-Encoding is undone, a bounded piece at a time: service.data.decoded), and kept in a
cache by content hash (found again from the URI and the object's ETag and size). An https://
host is resolved once and called on the checked address, refused when private or link-local
unless such targets are allowed, as webhooks are (service.contract.addresses).

Every exchange with an origin runs on an event loop under one deadline for the whole of it
(lookup, connect, headers, body): an origin that trickles a byte every few seconds fails at the
deadline, never holds a thread for long. The API awaits `head_async` and `fetch_async` on its
own loop (no request thread waits on an origin); a worker calls `fetch`, which runs the same
coroutine and also stops it, within POLL_S, once `should_stop` says so (a cancel, a shutdown).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import httpx
import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from service.contract.addresses import pinned, resolve_target_async
from service.contract.spec import UriDataset
from service.data.buckets import s3_store
from service.data.datafile import file_format, parse_upload
from service.data.decoded import ACCEPT_ENCODING, BoundedDecoder
from service.data.file_cache import FileCache
from service.data.parsed import DataError, ParsedDataset

CHUNK = 1 << 20
POLL_S = 0.2  # how often a worker's fetch asks should_stop
# The bucket refuses this server: the dataset's fault (or its owner's), not an outage.
DENIED = (PermissionDeniedError, UnauthenticatedError)
T = TypeVar("T")


class DeadlinePassed(DataError):
    """The exchange with the origin did not finish within its deadline."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"the origin did not answer in full within the deadline of {deadline_s:g} s")
        self.deadline_s = deadline_s


class Stopped(Exception):
    """`should_stop` said so while the object was being fetched (a cancel, a shutdown)."""


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


async def _https(uri: str, allow_private: bool) -> tuple[str, dict[str, str], dict[str, object]]:
    address = await resolve_target_async(uri, allow_private)
    if address is None:
        raise DataError("the host does not resolve, or resolves to a private or link-local address")
    url, headers, extensions = pinned(uri, address)
    return url, {**headers, "Accept-Encoding": ACCEPT_ENCODING}, extensions


@lru_cache(maxsize=4)
def _tls(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # Made once per trust setting (SSL_CERT_FILE, SSL_CERT_DIR, else certifi's): loading a CA
    # bundle takes milliseconds of the event loop, too many to pay per request.
    return httpx.create_ssl_context()


def _client() -> httpx.AsyncClient:
    # The deadline around the exchange bounds it; httpx's own timeouts are per operation
    # and would let a trickling origin go on for ever.
    verify = _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return httpx.AsyncClient(timeout=None, verify=verify, follow_redirects=False)


@asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise DeadlinePassed(seconds) from None


async def head_async(ds: UriDataset, *, allow_private: bool, max_bytes: int, deadline_s: float) -> Head:
    """The object's size and ETag, or DataError naming what is wrong (missing, refused, too
    large, an https host unreachable, no answer within `deadline_s`). A bucket that cannot be
    reached raises obstore's own error: an outage, which the caller answers 503 (the API) or
    retries (a worker)."""
    async with _deadline(deadline_s):
        found = await _head(ds, allow_private)
    if found.size_bytes is not None and found.size_bytes > max_bytes:
        raise DataError(f"the object's {found.size_bytes:,} bytes exceed the limit of {max_bytes:,}")
    return found


async def _head(ds: UriDataset, allow_private: bool) -> Head:
    if ds.uri.startswith("s3://"):
        store, key = _s3(ds.uri)
        try:
            meta = await obstore.head_async(store, key)
        except FileNotFoundError:
            raise DataError("no such object in the bucket") from None
        except DENIED:
            raise DataError("the server's credentials may not read this object") from None
        # anything else (the bucket unreachable) is no fault of the dataset: it propagates
        return Head(int(meta["size"]), meta.get("e_tag"))
    url, headers, extensions = await _https(ds.uri, allow_private)
    try:
        async with _client() as client:
            r = await client.head(url, headers=headers, extensions=extensions)
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
    encoded = r.headers.get("content-encoding", "identity").strip().lower() != "identity"
    # a compressed body's length is not the object's: only the GET, decoding, can tell
    size = int(length) if length and length.isdigit() and not encoded else None
    return Head(size, r.headers.get("etag"))


async def _download(ds: UriDataset, allow_private: bool, sink: Callable[[bytes], None]) -> None:
    """The object's bytes, decoded, handed to `sink` a piece (at most CHUNK) at a time."""
    if ds.uri.startswith("s3://"):
        store, key = _s3(ds.uri)
        try:
            result = await obstore.get_async(store, key)
        except FileNotFoundError:
            raise DataError("no such object in the bucket") from None
        except DENIED:
            raise DataError("the server's credentials may not read this object") from None
        async for chunk in result.stream(CHUNK):
            sink(bytes(chunk))
        return
    url, headers, extensions = await _https(ds.uri, allow_private)
    try:
        async with (
            _client() as client,
            client.stream("GET", url, headers=headers, extensions=extensions) as r,
        ):
            if r.status_code != 200:  # a redirect too: its target was never checked
                raise DataError(f"the URL answers {r.status_code}")
            decoder = BoundedDecoder(r.headers.get("content-encoding"))
            async for raw in r.aiter_raw(CHUNK):
                for piece in decoder.feed(raw):
                    sink(piece)
    except httpx.HTTPError as e:
        raise DataError(f"the URL cannot be read: {type(e).__name__}") from None


async def fetch_async(
    ds: UriDataset, cache: FileCache, *, allow_private: bool, max_bytes: int, deadline_s: float
) -> Fetched:
    """The object as a local file in the cache's `datasets/` folder, named by its sha256
    (downloaded only when the URI's ETag and size are not already cached; the cache trimmed to
    its bound after a download), the whole exchange within `deadline_s`. Read it under
    `cache.hold`: eviction may take it otherwise."""
    cache_dir = datasets_folder(cache)
    objects, refs = cache_dir / "objects", cache_dir / "refs"
    async with _deadline(deadline_s):
        found = await _head(ds, allow_private)
        if found.size_bytes is not None and found.size_bytes > max_bytes:
            raise DataError(f"the object's {found.size_bytes:,} bytes exceed the limit of {max_bytes:,}")
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
        h = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as f:

                def sink(piece: bytes) -> None:
                    nonlocal size
                    size += len(piece)
                    if size > max_bytes:  # a server that sent no length, a wrong one, or a bomb
                        raise DataError(f"the object exceeds the limit of {max_bytes:,} bytes")
                    h.update(piece)
                    f.write(piece)

                await _download(ds, allow_private, sink)
            sha = h.hexdigest()
            path = objects / f"{sha}.{ds.format}"
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if ref is not None:
        refs.mkdir(parents=True, exist_ok=True)
        ref.write_text(sha)
    # a walk of the cache folder: off the event loop (an API's), and past the deadline
    await asyncio.to_thread(cache.trim, keep=[path])
    return Fetched(path, sha, size)


def fetch(
    ds: UriDataset,
    cache: FileCache,
    *,
    allow_private: bool,
    max_bytes: int,
    deadline_s: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> Fetched:
    """fetch_async for a thread with no event loop (a worker): raises Stopped within POLL_S
    of `should_stop()` turning true, DeadlinePassed (a DataError) at `deadline_s`."""
    work = fetch_async(ds, cache, allow_private=allow_private, max_bytes=max_bytes, deadline_s=deadline_s)
    return asyncio.run(_until_stopped(work, should_stop))


async def _until_stopped(work: Awaitable[T], should_stop: Callable[[], bool]) -> T:
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=POLL_S)
        if done:
            return task.result()
        if should_stop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its cleanup (the partial file)
            raise Stopped


def datasets_folder(cache: FileCache) -> Path:
    """Where datasets by URI are cached: their objects, the refs that find them by ETag, and
    whatever a reader keeps of them (a worker's canonical files)."""
    return cache.root / "datasets"


def parse(
    ds: UriDataset,
    fetched: Fetched,
    *,
    max_rows: int,
    max_columns: int,
    max_bytes: int,
    max_text_bytes: int | None = None,
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
            max_text_bytes=max_text_bytes,
        )
    except DataError as e:
        raise DataError(e.without_content) from None
