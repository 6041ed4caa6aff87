"""A job's logs on real processes (API + Celery worker, both backends): what the worker logged
while it trained the job, read at GET /v1/jobs/{id}/logs, streamed as `log` events and printed
by `regtrain logs JOB -f`."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from live_service import Service
from regtrain_client import Client

TINY: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 3},
}


def _lines(service: Service, job_id: str, **params: Any) -> dict[str, Any]:
    r = service.http.get(f"/v1/jobs/{job_id}/logs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_failed_job_logs_its_data_step_the_engine_warning_and_the_traceback(service: Service) -> None:
    # Features at the edge of float32: the engine's standardization overflows (numpy warns) and
    # the loss is NaN from the first step, so the job fails `diverged`.
    rows = "".join(f"{3e38 if i % 3 else -3e38},{i % 7},{i % 2}\n" for i in range(60))
    ds = service.http.post("/v1/datasets", files={"file": ("edge.csv", b"big,small,label\n" + rows.encode())})
    assert ds.status_code == 201, ds.text
    job = service.submit({**TINY, "dataset": {"id": ds.json()["id"]}})
    done = service.wait(job["id"])
    assert done["status"] == "failed" and done["error"]["type"] == "diverged", done["error"]

    page = _lines(service, job["id"])
    lines = page["lines"]
    assert {line["attempt"] for line in lines} == {1}
    messages = [line["message"] for line in lines]
    assert messages[0].startswith("attempt 1 on "), messages
    assert any("data ready" in m for m in messages), messages
    warning = next(line for line in lines if "RuntimeWarning" in line["message"])
    assert warning["level"] == "WARNING" and "overflow" in warning["message"]
    failure = lines[-1]  # written before the job's final state: the last line
    assert failure["level"] == "WARNING" and "diverged" in failure["message"]
    assert "Traceback (most recent call last)" in failure["message"]
    assert "TrainingError" in failure["message"]
    # another worker's reaper and the webhook sender never write here
    assert not any("(re)sending" in m for m in messages)

    # the cursor: the lines after it, none past the last
    after = _lines(service, job["id"], cursor=page["next_cursor"])
    assert after == {"lines": [], "next_cursor": page["next_cursor"]}
    two = _lines(service, job["id"], limit=2)
    rest = _lines(service, job["id"], cursor=two["next_cursor"])
    assert two["lines"] + rest["lines"] == lines
    bad = service.http.get(f"/v1/jobs/{job['id']}/logs", params={"cursor": "12"})
    assert bad.status_code == 422, bad.text
    assert service.http.get("/v1/jobs/no-such-job/logs").status_code == 404


def test_a_job_logs_stream_as_events_and_resume_after_the_last_event_id(service: Service) -> None:
    job = service.submit(TINY)
    with Client(service.url) as client:
        events = list(client.events(job["id"], timeout=90))
        assert events[-1].event == "done" and events[-1].data["status"] == "succeeded"
        logs = [e for e in events if e.event == "log"]
        messages = [e.data["message"] for e in logs]
        assert messages[0].startswith("attempt 1 on ") and any("data ready" in m for m in messages)
        assert any("succeeded" in m for m in messages)
        # the same lines as GET /logs, each with its cursor
        stored = _lines(service, job["id"])["lines"]
        assert [e.data for e in logs] == stored
        assert logs[-1].data["cursor"] == _lines(service, job["id"])["next_cursor"]
        # reconnecting after the first line sends the lines after it, never that one again
        again = list(client.events(job["id"], last_event_id=logs[0].id, timeout=60))
        assert [e.data["message"] for e in again if e.event == "log"] == messages[1:]
        # the client's follower yields the lines, then stops with the job
        assert [line.message for line in client.follow_logs(job["id"], timeout=60)] == messages
        assert [line.message for line in client.logs(job["id"]).lines] == messages


def test_regtrain_logs_follows_a_job_until_it_ends(service: Service) -> None:
    job = service.submit({**TINY, "training": {"epochs": 20}})

    def regtrain(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "service.cli", "logs", job["id"], *args, "--url", service.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    followed = regtrain("-f")
    assert followed.returncode == 0, followed.stderr
    printed = followed.stdout.splitlines()
    assert printed[0].split()[1:3] == ["1", "INFO"] and "attempt 1 on " in printed[0]
    assert "succeeded" in printed[-1]
    assert service.job(job["id"])["status"] == "succeeded"
    as_json = regtrain("--json")
    assert as_json.returncode == 0, as_json.stderr
    lines = json.loads(as_json.stdout)
    assert printed[-1].endswith(" " + lines[-1]["message"])
    assert {"at", "attempt", "level", "message", "cursor"} <= set(lines[0])
