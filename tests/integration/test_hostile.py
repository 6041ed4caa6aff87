"""Hostile requests against a real API process on both backends: each is refused with a 4xx (or
handled) before the work it asks for is done, while the API's resident memory, read from /proc,
stays small and /healthz keeps answering. `pytest -s` prints each request's status, the API's
peak RSS and the slowest /healthz seen during it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from live_service import Service

pytestmark = pytest.mark.integration

# The API is shared with the other integration tests (whose predictions load torch into it), so
# what is held to a bound is what each request adds, not the process's size.
GROWTH_LIMIT_MB = 100
BASE = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextmanager
def watched(svc: Service) -> Iterator[dict[str, float]]:
    """While the block runs: the API's peak RSS (MB) and the slowest /healthz (ms)."""
    before = rss_mb(svc.api.pid)
    seen = {"before_mb": before, "rss_mb": before, "healthz_ms": 0.0, "samples": 0}
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            while not stop.is_set():
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                seen["healthz_ms"] = max(seen["healthz_ms"], 1000 * (time.perf_counter() - started))
                seen["rss_mb"] = max(seen["rss_mb"], rss_mb(svc.api.pid))
                seen["samples"] += 1
                stop.wait(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        after = seen["samples"] + 3  # a few samples after the request too (its cleanup, GC)
        deadline = time.monotonic() + 5
        while seen["samples"] < after and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join()


def _grid_bomb(http: httpx.Client) -> httpx.Response:
    grid = {f"regularization.{k}": [i * 1e-6 for i in range(60)] for k in ("l1", "l2")}
    grid |= {f"model.hidden.{i}": list(range(1, 61)) for i in range(8)}  # 60^10 combinations
    return http.post("/v1/sweeps", json={"base": BASE, "grid": grid})


def _huge_synthetic(http: httpx.Client) -> httpx.Response:
    spec = {**BASE, "dataset": {"name": "synthetic", "n_samples": 1_000_000, "n_features": 10_000}}
    return http.post("/v1/jobs", json=spec)


def _raw(body: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda http: http.post("/v1/jobs", content=body, headers={"content-type": "application/json"})


ATTACKS: dict[str, tuple[Callable[[httpx.Client], httpx.Response], int]] = {
    "sweep grid of 10 keys x 60 values": (_grid_bomb, 422),
    "synthetic 1e6 x 1e4": (_huge_synthetic, 422),
    "lone surrogate in a name": (
        _raw('{"name": "\\ud800", "dataset": {"name": "iris"}, "model": {"type": "mlp"}}'),
        422,
    ),
    "NUL in a name": (
        _raw('{"name": "a\\u0000", "dataset": {"name": "iris"}, "model": {"type": "mlp"}}'),
        422,
    ),
    "NUL in a grid value": (
        lambda http: http.post("/v1/sweeps", json={"base": BASE, "grid": {"name": ["a\x00b"]}}),
        422,
    ),
    "NUL in a path": (lambda http: http.get("/v1/jobs/ab%00cd"), 422),
    "NUL in a query": (lambda http: http.get("/v1/jobs", params={"cursor": "x\x00"}), 422),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_hostile_request_is_refused_with_the_api_small_and_answering(service: Service, attack: str) -> None:
    send, expected = ATTACKS[attack]
    with watched(service) as seen:
        started = time.perf_counter()
        r = send(service.http)
        took = time.perf_counter() - started
    print(f"\n{service.backend:8} {attack:38} {r.status_code}  peak RSS {seen['rss_mb']:.0f} MB"
          f" (+{seen['rss_mb'] - seen['before_mb']:.0f})"
          f"  slowest /healthz {seen['healthz_ms']:.0f} ms  took {1000 * took:.0f} ms")  # fmt: skip
    assert r.status_code == expected, r.text
    assert "detail" in r.json()
    assert seen["rss_mb"] - seen["before_mb"] < GROWTH_LIMIT_MB


@pytest.mark.parametrize(
    "last_event_id", [b"\xb2.1.1", b"1" * 20 + b".2.3", b"9" * 19 + b".9.9", b"1.2", b"\xff\xfe"]
)
def test_any_last_event_id_starts_the_stream_over_or_resumes(service: Service, last_event_id: bytes) -> None:
    job = service.wait(service.submit({**BASE, "name": "sse"})["id"])
    with service.http.stream(
        "GET",
        f"/v1/jobs/{job['id']}/events",
        headers={"Last-Event-ID": last_event_id},  # type: ignore[dict-item]
    ) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    events = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "status" and events[-1] == "done", events  # from the start, to the end


def test_nothing_of_the_refused_requests_was_stored(service: Service) -> None:
    names = {j["name"] for j in service.http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert not any(n and ("\x00" in n or "\ufffd" in n) for n in names)
    assert service.http.get("/readyz").status_code == 200
