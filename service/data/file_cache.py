"""A folder of cached copies kept under a size bound, least recently used evicted first.

Both caches of a process live in one such folder (REGTRAIN_DATA_DIR/cache): the API's copies of
checkpoints and exports fetched from a bucket, and the datasets fetched by URI (by hash). Every
file in the folder is a copy that can be fetched again, so any of them may go, except one in
use: a reader holds a shared flock on each file it reads (`hold`), and eviction takes an
exclusive one without waiting, skipping any file it cannot lock. Locks are per open file
description, so they work across the processes that share a data dir (an API and a worker of
`regtrain up`) as well as between threads.

A file's mtime is its last use (set when it is written and whenever it is held), so eviction
goes oldest first. An evicted file is renamed away while locked, then unlinked: a reader that
opened it just before never finds a half-removed path, and `hold` notices that the file it
locked is no longer the one at its path and fetches it again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

# A file that vanished between being fetched and being locked is fetched again this many times.
HOLD_TRIES = 3

T = TypeVar("T")


class FileCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @contextmanager
    def hold(self, fetch: Callable[[], T], files: Callable[[T], Sequence[Path]]) -> Iterator[T]:
        """What `fetch` returns (it makes `files` of it present, downloading what is missing),
        those files locked against eviction until the block ends. Eviction may remove one
        between `fetch` returning and the lock being taken: then `fetch` runs again."""
        for _ in range(HOLD_TRIES):
            got = fetch()
            paths = files(got)
            with ExitStack() as locks:
                if all(_lock_shared(locks, p) for p in paths):
                    for p in paths:
                        os.utime(p)  # the last use, for the eviction order
                    yield got
                    return
        raise FileNotFoundError(f"evicted as soon as fetched, {HOLD_TRIES} times: {paths[0]}")

    def trim(self, keep: Collection[Path] = ()) -> list[Path]:
        """Remove the least recently used files not in use until the folder's files take at most
        max_bytes; what was removed. One process trims at a time (the others skip: its pass
        covers their files too). Files in use stay even when the folder is over its bound, and
        so do `keep` (what the caller just fetched and is about to hold)."""
        kept = {p.resolve() for p in keep}
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".trim.lock").open("a") as guard:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            entries = list(_files(self.root))
            total = sum(size for _, size, _ in entries)
            removed: list[Path] = []
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path.resolve() not in kept and _evict(path):
                    total -= size
                    removed.append(path)
            return removed


def _lock_shared(locks: ExitStack, path: Path) -> bool:
    """A shared lock on the file at `path`, held by `locks`; False when the file is gone, or was
    evicted between opening and locking (the locked inode is no longer the one at the path)."""
    try:
        f = locks.enter_context(path.open("rb"))
    except FileNotFoundError:
        return False
    fcntl.flock(f, fcntl.LOCK_SH)
    try:
        return os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def _evict(path: Path) -> bool:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use
        if os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
            return False  # replaced meanwhile by a fresh copy: that one is new, not the oldest
        gone = path.with_name(f".{path.name}.{os.getpid()}.evicted")
        os.replace(path, gone)
        gone.unlink()
        return True


def _files(root: Path) -> Iterator[tuple[float, int, Path]]:
    """(mtime, size, path) of every cached file; dot files (temporary files being written, the
    trim lock) are not entries."""
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            yield st.st_mtime, st.st_size, path
