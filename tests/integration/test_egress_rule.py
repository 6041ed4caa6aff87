"""One egress rule for the deployment, on real processes laid out as docker-compose.yml lays them
out: API keys on the API only, none on the worker. The rule that admitted a job (the API's) is
what every process acting for it obeys: a keyless worker, which would allow loopback by its own
settings, never delivers a webhook there for a job the API admitted under a denying rule; and an
API that allows private targets gets its jobs delivered by a worker whose own settings deny them.
Both backends (embedded: SQLite + file broker; fleet: PostgreSQL + Redis)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from live_service import Service, base_env, fleet_backend

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer key-a"}
TINY = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 1, "device": "cpu"}}  # fmt: skip


class Receiver:
    """An HTTP server on `address` that counts every POST it gets (and answers 204)."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.received: list[str] = []
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Hook)
        self.port = int(self.server.server_address[1])
        self.url = f"http://{address}:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= n, f"{len(self.received)} of {n} deliveries arrived"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fleet(
    request: pytest.FixtureRequest, root: Path, api: dict[str, str], worker: dict[str, str]
) -> Iterator[Service]:
    env = base_env(root / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        own = {"api": {"REGTRAIN_API_KEYS": "tenant-a:key-a", **api}}
        svc = Service(request.param, env, root, own_env=lambda label: own.get(label, worker))
        stack.callback(svc.close)
        svc.http.headers.update(KEY)
        yield svc


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def denying(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API has keys (so the rule denies private targets); the worker has none (so its own
    settings would allow them)."""
    yield from _fleet(request, tmp_path_factory.mktemp(f"deny-{request.param}"), {}, {})


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def allowing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API allows private targets explicitly; the worker's own settings deny them."""
    root = tmp_path_factory.mktemp(f"allow-{request.param}")
    yield from _fleet(
        request,
        root,
        {"REGTRAIN_EGRESS_PRIVATE_TARGETS": "true"},
        {"REGTRAIN_API_KEYS": "tenant-a:key-a", "REGTRAIN_EGRESS_PRIVATE_TARGETS": "false"},
    )


def _private_name() -> tuple[str, str]:
    """(a host name, its address) that resolves to loopback or a private address without DNS:
    this host's own name, as /etc/hosts gives it. The API passes names at submit (what a name
    resolves to may change before a delivery; only the sender's check, at its own lookup,
    counts), so this is how a job admitted under a denying rule comes to target a private
    address."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        pytest.skip(f"this host's name {name!r} does not resolve")
    if not addresses or any(ipaddress.ip_address(a).is_global for a in addresses):
        pytest.skip(f"this host's name {name!r} resolves to a public address")
    return name, sorted(addresses)[0]


def _store_url(svc: Service) -> str:
    return svc.env.get("REGTRAIN_DATABASE_URL") or f"sqlite:///{svc.env['REGTRAIN_DATA_DIR']}/regtrain.db"


def _deliveries_ended(svc: Service, job_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The job's webhook deliveries, once none is pending (read from the store itself: the API
    shows no outbox)."""
    engine = sa.create_engine(_store_url(svc))
    table = sa.table("webhook_deliveries", sa.column("job_id"), sa.column("status"), sa.column("last_error"))
    try:
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as conn:
                rows = [
                    dict(r) for r in conn.execute(sa.select(table).where(table.c.job_id == job_id)).mappings()
                ]
            if rows and all(r["status"] != "pending" for r in rows):
                return rows
            assert time.monotonic() < deadline, f"deliveries still pending: {rows}\n{svc.log('worker0')}"
            time.sleep(0.2)
    finally:
        engine.dispose()


def test_a_loopback_receiver_is_refused_at_submit_under_a_denying_rule(denying: Service) -> None:
    for url in (
        "http://127.0.0.1:9/internal-admin",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://127.1:9/",
    ):
        spec = {**TINY, "notify": {"url": url}}
        for path in ("/v1/jobs", "/v1/jobs:validate"):
            r = denying.http.post(path, json=spec)
            assert r.status_code == 422, (path, url, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "notify", "url"], r.text
        r = denying.http.post("/v1/sweeps", json={"base": spec, "grid": {"regularization.l2": [0.0, 0.1]}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base", "notify", "url"], (
            r.text
        )


def test_a_keyless_worker_never_delivers_to_loopback_for_a_job_admitted_under_a_denying_rule(
    denying: Service,
) -> None:
    name, address = _private_name()
    rx = Receiver(address)
    try:
        job = denying.submit({**TINY, "notify": {"url": f"http://{name}:{rx.port}/internal-admin",
                                                 "events": ["status", "done"]}})  # fmt: skip
        assert denying.wait(job["id"])["status"] == "succeeded"
        deliveries = _deliveries_ended(denying, job["id"])
        assert deliveries and all(d["status"] == "failed" for d in deliveries), deliveries
        assert all("private" in d["last_error"] for d in deliveries), deliveries
        assert rx.received == []
    finally:
        rx.close()


def test_a_job_admitted_under_an_allowing_rule_is_delivered_by_a_worker_whose_settings_deny(
    allowing: Service,
) -> None:
    rx = Receiver()
    try:
        job = allowing.submit({**TINY, "notify": {"url": rx.url}})
        assert allowing.wait(job["id"])["status"] == "succeeded"
        rx.wait(1)
        assert [d["status"] for d in _deliveries_ended(allowing, job["id"])] == ["delivered"]
    finally:
        rx.close()
