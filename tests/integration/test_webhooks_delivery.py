"""Webhooks over real processes (embedded backend, API keys on): Standard Webhooks signatures
that the `standardwebhooks` verifier accepts with the right secret only, a secret per tenant and
per job that no document shows, a trickling receiver that delays no other delivery, and a
delivery that outlives the worker that scheduled it."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from live_service import Service, base_env, free_port
from standardwebhooks import Webhook, WebhookVerificationError

pytestmark = pytest.mark.integration

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
TINY = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 1, "device": "cpu"}}  # fmt: skip


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET_A, SECRET_B = whsec(), whsec()


class Receiver:
    """A webhook receiver on loopback that keeps every delivery (headers, body, arrival time)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= n, f"{len(self.received)} of {n} deliveries arrived"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Trickler:
    """A receiver that reads the request, then answers one byte every 2 s, for ever."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow"
        self.closed_after: list[float] = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        started = time.monotonic()
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                conn.sendall(bytes([byte]))
                if self.stop.wait(2):
                    break
        except OSError:  # the sender gave up and closed the connection
            self.closed_after.append(time.monotonic() - started)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("webhooks")
    env = base_env(root / "data")
    env.update(
        REGTRAIN_API_KEYS="tenant-a:key-a,tenant-b:key-b",
        REGTRAIN_WEBHOOK_SECRETS=f"tenant-a:{SECRET_A},tenant-b:{SECRET_B}",
        # The receivers are on loopback, which keys would otherwise refuse.
        REGTRAIN_WEBHOOK_PRIVATE_TARGETS="true",
    )
    svc = Service("embedded", env, root)
    svc.http.headers.update(A)
    try:
        yield svc
    finally:
        svc.close()


def _job(svc: Service, spec: dict[str, Any], headers: dict[str, str] = A) -> dict[str, Any]:
    r = svc.http.post("/v1/jobs", json=spec, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_deliveries_verify_with_the_tenants_secret_only(hooked: Service) -> None:
    rx = Receiver()
    try:
        job = _job(hooked, {**TINY, "notify": {"url": rx.url}})
        rx.wait(1)
        headers, body, _ = rx.received[0]
        assert json.loads(body)["job"]["id"] == job["id"]
        assert Webhook(SECRET_A).verify(body, headers)["event"] == "done"
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        with pytest.raises(WebhookVerificationError):  # another tenant's secret: a forgery
            Webhook(SECRET_B).verify(body, headers)
        with pytest.raises(WebhookVerificationError):  # a replay with a refreshed timestamp
            Webhook(SECRET_A).verify(body, {**headers, "webhook-timestamp": str(int(time.time()) + 1)})
        with pytest.raises(WebhookVerificationError):  # a captured delivery replayed later
            old = str(int(headers["webhook-timestamp"]) - 3600)
            forged = Webhook(SECRET_A).sign(headers["webhook-id"], _at(old), body.decode())
            Webhook(SECRET_A).verify(body, {**headers, "webhook-timestamp": old, "webhook-signature": forged})
    finally:
        rx.close()


def _at(ts: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(ts), UTC)


def test_a_jobs_own_secret_signs_it_and_is_never_shown(hooked: Service) -> None:
    rx = Receiver()
    own = whsec()
    try:
        job = _job(hooked, {**TINY, "notify": {"url": rx.url, "secret": own}}, headers=B)
        rx.wait(1)
        headers, body, _ = rx.received[0]
        assert Webhook(own).verify(body, headers)["job"]["id"] == job["id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET_B).verify(body, headers)  # the tenant's secret does not sign it
        for doc in (job, hooked.http.get(f"/v1/jobs/{job['id']}", headers=B).json(),
                    hooked.http.get("/v1/jobs", headers=B).json(), json.loads(body)):  # fmt: skip
            assert own not in json.dumps(doc)
        assert "secret" not in job["spec"]["notify"]
        bad = hooked.http.post("/v1/jobs", json={**TINY, "notify": {"url": rx.url, "secret": "hunter2"}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "notify", "secret"]
    finally:
        rx.close()


def test_a_sweeps_own_secret_signs_its_retrain_job(hooked: Service) -> None:
    """The base spec's notify.secret is write-only, so the stored sweep leaves it out; the job
    that retrains the best trial is still signed with it, not with the tenant's."""
    rx, own = Receiver(), whsec()
    base = {**TINY, "notify": {"url": rx.url, "secret": own}}
    try:
        r = hooked.http.post("/v1/sweeps", json={"base": base, "grid": {"regularization.l2": [0, 0.01]}},
                             headers=B)  # fmt: skip
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while (sweep := hooked.http.get(f"/v1/sweeps/{sweep_id}", headers=B).json())["status"] not in {
            "succeeded", "failed", "cancelled"
        }:  # fmt: skip
            assert time.monotonic() < deadline, sweep
            time.sleep(0.2)
        assert sweep["status"] == "succeeded", sweep
        rx.wait(1)
        headers, body, _ = rx.received[0]
        assert Webhook(own).verify(body, headers)["job"]["id"] == sweep["best"]["job_id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET_B).verify(body, headers)
        listed = hooked.http.get("/v1/sweeps", headers=B).json()
        for doc in (r.json(), sweep, listed, json.loads(body)):
            assert own not in json.dumps(doc)
    finally:
        rx.close()


def test_a_trickling_receiver_delays_no_other_delivery(hooked: Service) -> None:
    slow, rx = Trickler(), Receiver()
    try:
        first = _job(hooked, {**TINY, "name": "slow", "notify": {"url": slow.url}})
        hooked.wait(first["id"])
        time.sleep(0.5)  # its delivery is trickling now
        second = _job(hooked, {**TINY, "name": "fast", "notify": {"url": rx.url}})
        done = hooked.wait(second["id"])
        finished = time.monotonic()
        rx.wait(1, timeout=20)
        _, body, arrived = rx.received[0]
        assert json.loads(body)["job"]["id"] == done["id"]
        assert arrived - finished < 3.0, f"the delivery took {arrived - finished:.1f} s"
        deadline = time.monotonic() + 30
        while not slow.closed_after and time.monotonic() < deadline:
            time.sleep(0.2)
        # The trickle is cut at the deadline for the whole request (10 s), not kept for ever.
        assert slow.closed_after and slow.closed_after[0] < 15, slow.closed_after
    finally:
        slow.close()
        rx.close()


def test_a_delivery_outlives_the_worker_that_scheduled_it(hooked: Service) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/late"  # nothing listens yet: the first tries fail
    job = _job(hooked, {**TINY, "notify": {"url": url}})
    hooked.wait(job["id"])
    time.sleep(1.5)  # a try or two, refused; the next one is scheduled in the store
    worker = hooked.workers[-1]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    got: list[bytes] = []
    rx_server = ThreadingHTTPServer(("127.0.0.1", port), _collector(got))
    threading.Thread(target=rx_server.serve_forever, daemon=True).start()
    try:
        hooked.start_worker()  # a new process sends what the dead one scheduled
        deadline = time.monotonic() + 45
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got and json.loads(got[0])["job"]["id"] == job["id"]
    finally:
        rx_server.shutdown()
        rx_server.server_close()


def _collector(got: list[bytes]) -> type[BaseHTTPRequestHandler]:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return Hook
