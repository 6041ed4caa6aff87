"""The bounded cache folder: least recently used copies go first, a copy in use never goes (held
in this process or in another one), and the two caches that use it (the API's copies of bucket
artifacts, datasets fetched by URI) stay within REGTRAIN_CACHE_MAX_BYTES against a real
S3-compatible server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import obstore
from s3_server import S3Server

from service.contract.spec import UriDataset
from service.data import uri as dataset_uri
from service.data.buckets import s3_store
from service.data.file_cache import FileCache
from service.settings import Settings
from service.store.artifacts import Artifacts

HOLDER = """
import sys
from pathlib import Path
from service.data.file_cache import FileCache
path = Path(sys.argv[2])
with FileCache(Path(sys.argv[1]), 0).hold(lambda: path, lambda p: [p]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _entry(root: Path, name: str, size: int, age_s: int) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = 1_700_000_000 - age_s
    os.utime(path, (t, t))
    return path


def test_over_the_bound_the_least_recently_used_files_go(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_bytes=250)
    oldest = _entry(tmp_path, "a/oldest", 100, age_s=40)
    older = _entry(tmp_path, "b/older", 100, age_s=30)
    newer = _entry(tmp_path, "a/newer", 100, age_s=20)
    newest = _entry(tmp_path, "newest", 100, age_s=10)
    (tmp_path / ".being-written.tmp").write_bytes(b"x" * 1000)  # not an entry: never counted

    assert sorted(cache.trim()) == sorted([oldest, older])
    assert newer.is_file() and newest.is_file() and (tmp_path / ".being-written.tmp").is_file()
    assert cache.trim() == []  # within the bound now


def test_holding_a_file_marks_it_used(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_bytes=150)
    old = _entry(tmp_path, "old", 100, age_s=40)
    mid = _entry(tmp_path, "mid", 100, age_s=30)
    new = _entry(tmp_path, "new", 100, age_s=20)
    with cache.hold(lambda: old, lambda p: [p]) as held:
        assert held == old
    # the oldest file, used just now, is the most recently used: the other two go
    assert sorted(cache.trim()) == sorted([mid, new]) and old.is_file()


def test_a_held_file_stays_even_when_it_is_the_oldest(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_bytes=0)
    busy = _entry(tmp_path, "busy", 100, age_s=40)
    idle = _entry(tmp_path, "idle", 100, age_s=10)
    with cache.hold(lambda: busy, lambda p: [p]):
        os.utime(busy, (0, 0))  # the oldest by far, and still in use
        assert cache.trim() == [idle]
        assert busy.read_bytes() == b"x" * 100
    assert cache.trim() == [busy]


def test_a_file_held_by_another_process_is_not_evicted(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_bytes=0)
    busy = _entry(tmp_path, "busy", 100, age_s=40)
    idle = _entry(tmp_path, "idle", 100, age_s=10)
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), str(busy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert cache.trim() == [idle]
        assert busy.is_file()
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert cache.trim() == [busy]


def test_a_file_evicted_before_it_is_locked_is_fetched_again(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, max_bytes=10**9)
    path = tmp_path / "copy"
    calls = []

    def fetch() -> Path:
        calls.append(1)
        path.write_bytes(b"fresh")
        if len(calls) == 1:  # another process's trim takes it right after the download
            path.unlink()
        return path

    with cache.hold(fetch, lambda p: [p]) as got:
        assert got.read_bytes() == b"fresh"
    assert len(calls) == 2


def test_the_apis_copies_of_bucket_artifacts_stay_within_the_bound(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/run"
    writer = Artifacts(Settings(data_dir=tmp_path / "w", artifacts_url=url))
    shas = {}
    for name in ("a", "b", "c"):
        src = tmp_path / f"{name}.bin"
        src.write_bytes(name.encode() * 1000)
        writer.put(f"jobs/j1/checkpoints/{name}.safetensors", src)
        shas[name] = hashlib.sha256(src.read_bytes()).hexdigest()

    # room for two 1000-byte copies
    api = Artifacts(Settings(data_dir=tmp_path / "api", artifacts_url=url, cache_max_bytes=2500))
    copies = api.cache_dir / "jobs" / "j1" / "checkpoints"
    with api.cached("jobs/j1/checkpoints/a.safetensors", shas["a"]) as a:
        with api.cached("jobs/j1/checkpoints/b.safetensors", shas["b"]):
            pass
        with api.cached("jobs/j1/checkpoints/c.safetensors", shas["c"]) as c:
            # `a` is the oldest but in use: `b` goes
            assert a.is_file() and c.is_file() and not (copies / "b.safetensors").exists()
    with api.cached("jobs/j1/checkpoints/b.safetensors", shas["b"]) as b:
        assert b.read_bytes() == b"b" * 1000  # fetched again from the bucket
    # now `a` (released first) was the least recently used
    assert sorted(p.name for p in copies.iterdir()) == ["b.safetensors", "c.safetensors"]


def test_datasets_fetched_by_uri_stay_within_the_bound(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.bucket()
    store = s3_store(f"s3://{bucket}")
    cache = FileCache(tmp_path / "cache", max_bytes=3000)
    fetched = []
    for i in range(3):
        obstore.put(store, f"d{i}.csv", ("x,label\n" + f"{i},1\n" * 600).encode()[:2000])
        ds = UriDataset(uri=f"s3://{bucket}/d{i}.csv", target="label")
        fetched.append(dataset_uri.fetch(ds, cache, allow_private=True, max_bytes=10**6, deadline_s=30))
    # each object is 2000 bytes: only the newest fits (its ref files are a few bytes each)
    assert [f.path.is_file() for f in fetched] == [False, False, True]
    # fetched again: downloaded anew and the same object by its hash
    again = dataset_uri.fetch(
        UriDataset(uri=f"s3://{bucket}/d0.csv", target="label"),
        cache,
        allow_private=True,
        max_bytes=10**6,
        deadline_s=30,
    )
    assert again.sha256 == fetched[0].sha256 and again.path.is_file() and not fetched[2].path.exists()
