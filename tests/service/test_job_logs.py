"""A job's log in the store (service/store/job_logs.py) on both backends, and the worker's capture
of an attempt's lines (worker/attempt_logs.py) writing into it."""

from __future__ import annotations

import json
import logging
import threading
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest

from service.store import Repository
from service.store.job_logs import LogLine, line_size
from worker.attempt_logs import AttemptLog

SPEC: dict[str, Any] = {"dataset": {"name": "iris"}, "model": {"type": "mlp"}}


def _lines(n: int, width: int = 60, start: int = 0) -> list[LogLine]:
    return [
        LogLine(datetime.now(UTC), "INFO", f"line {i:05d} " + "x" * width) for i in range(start, start + n)
    ]


def _messages(store: Repository, job_id: str) -> list[str]:
    return [r["message"] for r in store.log_lines(job_id, after=None, limit=100_000)]


def _size(store: Repository, job_id: str) -> int:
    return sum(line_size(m) for m in _messages(store, job_id))


def test_lines_read_back_in_order_past_a_cursor(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.append_logs(job_id, 1, _lines(3), max_bytes=1 << 20) == 3
    assert store.append_logs(job_id, 2, _lines(2, start=3), max_bytes=1 << 20) == 2
    rows = store.log_lines(job_id, after=None, limit=100)
    assert [r["message"][:10] for r in rows] == [f"line {i:05d}" for i in range(5)]
    assert [r["attempt"] for r in rows] == [1, 1, 1, 2, 2]
    assert rows[0]["at"].tzinfo is not None and rows[0]["level"] == "INFO"
    page = store.log_lines(job_id, after=rows[1]["seq"], limit=2)
    assert [r["seq"] for r in page] == [rows[2]["seq"], rows[3]["seq"]]
    assert store.log_lines(job_id, after=rows[-1]["seq"], limit=10) == []


def test_the_bound_keeps_the_first_and_last_lines_and_says_how_many_it_dropped(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    bound = 4000
    for batch in range(10):  # 200 lines of ~100 bytes in batches, far past the bound
        store.append_logs(job_id, 1, _lines(20, start=batch * 20), max_bytes=bound)
        assert _size(store, job_id) <= bound
    messages = _messages(store, job_id)
    markers = [m for m in messages if "lines dropped" in m]
    assert len(markers) == 1, messages
    at = messages.index(markers[0])
    head, tail = messages[:at], messages[at + 1 :]
    assert head and head[0].startswith("line 00000")  # the first lines stay
    assert tail[-1].startswith("line 00199")  # and the newest
    kept = [int(m.split()[1]) for m in head + tail]
    assert kept == sorted(kept)
    dropped = int(markers[0].strip("[").split()[0])
    assert dropped + len(kept) == 200  # the marker counts every line it stands for


def test_a_job_deleted_with_its_log(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    store.append_logs(job_id, 1, _lines(3), max_bytes=1 << 20)
    assert store.cancel(job_id, "t") == "cancelled"
    assert store.delete_job(job_id, "t") == "deleted"
    assert store.log_lines(job_id, after=None, limit=10) == []
    # a worker that flushes after the delete writes nothing, and fails nothing
    assert store.append_logs(job_id, 1, _lines(1), max_bytes=1 << 20) == 0


def test_an_attempt_log_captures_its_thread_warnings_and_tracebacks_in_batches(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    writes: list[int] = []
    store.listeners.append(lambda _id, method, out: writes.append(out) if method == "append_logs" else None)
    log = logging.getLogger("regtrain.worker")
    with AttemptLog(store, job_id, max_bytes=1 << 20, flush_s=3600) as capture:
        log.info("before the claim: not this attempt's")
        capture.begin(2, "attempt 2 on w1")
        log.info("job %s: data", job_id)
        logging.getLogger("worker.training.loop").warning("from the engine")
        warnings.warn("a warning of the engine", UserWarning, stacklevel=1)
        other = threading.Thread(target=lambda: log.warning("another job's reaper line"))
        other.start()
        other.join()
        try:
            raise ValueError("boom")
        except ValueError:
            log.warning("job failed: bad_data")  # logged while handling it: its traceback comes too
        assert writes == []  # buffered: nothing written yet
        capture.flush()
        assert writes == [5]
    rows = store.log_lines(job_id, after=None, limit=100)
    assert [r["attempt"] for r in rows] == [2] * 5 and rows[0]["message"] == "attempt 2 on w1"
    text = "\n".join(r["message"] for r in rows)
    assert "before the claim" not in text and "reaper" not in text
    assert [r["level"] for r in rows] == ["INFO", "INFO", "WARNING", "WARNING", "WARNING"]
    assert "UserWarning: a warning of the engine" in rows[3]["message"]
    assert "Traceback (most recent call last)" in rows[4]["message"]
    assert "ValueError: boom" in rows[4]["message"]


def test_a_line_is_cut_to_a_share_of_the_bound_keeping_its_end(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    with AttemptLog(store, job_id, max_bytes=8000, flush_s=3600) as capture:
        capture.begin(1, "attempt 1 on w1")
        logging.getLogger("regtrain.worker").error("start " + "y" * 50_000 + " the end")
    _, row = store.log_lines(job_id, after=None, limit=10)
    assert len(row["message"].encode()) <= 8000 // 4
    assert row["message"].startswith("start ") and row["message"].endswith(" the end")
    assert "characters cut" in row["message"]


def test_a_failing_store_write_never_fails_the_attempt(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]

    class Broken:
        def append_logs(self, *_: Any, **__: Any) -> int:
            raise RuntimeError("the store is down")

    with AttemptLog(Broken(), job_id, max_bytes=1 << 20, flush_s=3600) as capture:  # type: ignore[arg-type]
        capture.begin(1, "attempt 1 on w1")
        logging.getLogger("regtrain.worker").info("a line that will not be kept")
        capture.flush()


@pytest.fixture(autouse=True)
def _info_logs() -> Any:
    """The worker logs at INFO (regtrain worker --loglevel info); so do these tests."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


def test_a_tenant_reads_and_streams_only_its_own_jobs_logs_which_go_with_the_job(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    job = client.post("/v1/jobs", json=SPEC, headers=a).json()
    store: Repository = client.app.state.store  # type: ignore[attr-defined]
    # what a worker's attempt writes, control characters and all (JSON escapes them)
    lines = [
        LogLine(datetime.now(UTC), "INFO", "attempt 1 on w1"),
        LogLine(datetime.now(UTC), "ERROR", "\x1b[2Jboom"),
    ]
    store.append_logs(job["id"], 1, lines, max_bytes=1 << 20)

    url = f"/v1/jobs/{job['id']}/logs"
    assert client.get(url, headers=b).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/events", headers=b).status_code == 404
    assert client.get(url).status_code == 401
    page = client.get(url, headers=a).json()
    assert [(line["attempt"], line["level"], line["message"]) for line in page["lines"]] == [
        (1, "INFO", "attempt 1 on w1"),
        (1, "ERROR", "\x1b[2Jboom"),
    ]
    assert client.get(url, headers=a, params={"limit": 5001}).status_code == 422
    assert client.get(url, headers=a, params={"cursor": "not-a-cursor"}).status_code == 422

    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=a).status_code == 202
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=a) as r:
        text = "".join(r.iter_text())
    logs = [json.loads(chunk.split("data: ", 1)[1]) for chunk in text.split("\n\n") if "event: log" in chunk]
    assert [line["message"] for line in logs] == ["attempt 1 on w1", "\x1b[2Jboom"]
    assert logs[-1]["cursor"] == page["next_cursor"]

    assert client.delete(f"/v1/jobs/{job['id']}", headers=a).status_code == 204
    assert client.get(url, headers=a).status_code == 404
    assert store.log_lines(job["id"], after=None, limit=10) == []
