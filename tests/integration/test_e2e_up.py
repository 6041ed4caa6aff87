"""`regtrain up`: the API and a worker from one command, on the embedded default; Ctrl-C stops
both, and a job it was training goes back to the queue."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
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
    assert "Traceback" not in text
    # The store says the long job is queued again, to resume at the next start.
    from service.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'regtrain.db'}")
    assert store.get_job(long_id)["status"] == "queued"  # type: ignore[index]
    store.engine.dispose()


def _start_up(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    env |= {"REGTRAIN_DATA_DIR": str(tmp_path / "data"), "REGTRAIN_HEARTBEAT_SECONDS": "0.3",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = open(tmp_path / "up.log", "ab")  # noqa: SIM115 (closed with the process)
    up = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    while True:
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        try:
            if http.get("/readyz").status_code == 200:
                return up, http
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "regtrain up never got ready"
        time.sleep(0.2)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie of a dead parent is reaped by init; one of ours would show as <defunct>.
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
        if state.strip().startswith("Z"):
            return True
        time.sleep(0.2)
    return False


def test_sigterm_stops_up_like_ctrl_c_and_requeues_the_running_job(tmp_path: Path) -> None:
    up, http = _start_up(tmp_path, free_port())
    try:
        long = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [256, 256]},
                "training": {"epochs": 2000}}  # fmt: skip
        long_id = http.post("/v1/jobs", json=long).json()["id"]
        deadline = time.monotonic() + 120
        while http.get(f"/v1/jobs/{long_id}").json()["progress"]["epoch"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        workers = _children(up.pid)
        assert workers
        up.send_signal(signal.SIGTERM)  # systemd, a supervisor, kill
        assert up.wait(timeout=60) == 0
        assert all(_gone(pid, 5) for pid in workers), "the worker outlived regtrain up"
    finally:
        http.close()
        if up.poll() is None:
            up.kill()
    text = (tmp_path / "up.log").read_text()
    assert "regtrain: stopped" in text and "Traceback" not in text
    from service.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'regtrain.db'}")
    assert store.get_job(long_id)["status"] == "queued"  # type: ignore[index]
    store.engine.dispose()


def test_a_worker_dies_with_a_sigkilled_up(tmp_path: Path) -> None:
    up, http = _start_up(tmp_path, free_port())
    http.close()
    workers = _children(up.pid)
    assert workers
    try:
        up.kill()
        up.wait()
        assert all(_gone(pid, 30) for pid in workers), "the worker outlived a SIGKILLed regtrain up"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_up_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
        env["REGTRAIN_DATA_DIR"] = str(tmp_path / "data")
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 1
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines
    assert not (tmp_path / "data" / "regtrain.db").exists()  # nothing started
