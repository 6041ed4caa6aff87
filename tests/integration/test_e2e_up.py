"""`regtrain up`: the API and a worker from one command, on the embedded default; Ctrl-C stops
both, and a job it was training goes back to the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_service import FINISHED, free_port

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_up_trains_and_ctrl_c_stops_api_and_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    env |= {"REGTRAIN_DATA_DIR": str(tmp_path / "data"), "REGTRAIN_HEARTBEAT_SECONDS": "0.3",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                assert up.poll() is None, (tmp_path / "up.log").read_text()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "regtrain up never got ready"
                time.sleep(0.2)
            spec = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [8]},
                    "training": {"epochs": 2}}  # fmt: skip
            job_id = http.post("/v1/jobs", json=spec).json()["id"]
            while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in FINISHED:
                assert time.monotonic() < deadline + 60, job
                time.sleep(0.2)
            assert job["status"] == "succeeded", job["error"]
            # A long job, stopped by Ctrl-C mid-training, goes back to the queue.
            long = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [256, 256]},
                    "training": {"epochs": 2000}}  # fmt: skip
            long_id = http.post("/v1/jobs", json=long).json()["id"]
            while http.get(f"/v1/jobs/{long_id}").json()["progress"]["epoch"] < 1:
                assert time.monotonic() < deadline + 120
                time.sleep(0.2)
        workers = _children(up.pid)
        assert workers, "regtrain up runs its worker as a child process"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert f"http://127.0.0.1:{port}/docs" in text and "regtrain: stopped" in text
    # The store says the long job is queued again, to resume at the next start.
    from service.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'regtrain.db'}")
    assert store.get_job(long_id)["status"] == "queued"  # type: ignore[index]
    store.engine.dispose()
