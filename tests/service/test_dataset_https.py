"""Datasets by https:// URI against a real TLS server process on loopback (Python's http.server
behind a certificate made for the test, trusted through SSL_CERT_FILE as a deployment would
trust its own CA): the API's HEAD at submit, the worker's bounded GET, the object's hash."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from service.store import open_store
from service.store.artifacts import Artifacts
from service.store.tables import jobs
from worker.presence import Presence
from worker.tasks import execute

CSV = ("a,b,label\n" + "".join(f"{i * 0.1:.1f},{(i * 7) % 5},{'xy'[i % 2]}\n" for i in range(60))).encode()

SERVER = textwrap.dedent(
    """
    import http.server, ssl, sys
    root, cert, key = sys.argv[1:4]

    class Handler(http.server.SimpleHTTPRequestHandler):
        # /stream/NAME: the file with no Content-Length (HEAD and GET), as a server streaming
        # generated data answers; the reader only learns the size by reading
        def send_head(self):
            if not self.path.startswith("/stream/"):
                return super().send_head()
            body = open(root + "/" + self.path.removeprefix("/stream/"), "rb")
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            return body

    handler = lambda *a: Handler(*a, directory=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
    """
)


@pytest.fixture(scope="module")
def https_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, the folder it serves, the certificate to trust)."""
    root = tmp_path_factory.mktemp("https")
    site, cert, key = root / "site", root / "cert.pem", root / "key.pem"
    site.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(site), str(cert), str(key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"https://localhost:{port}", site, cert
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _worker(settings: Settings, data_dir: Path) -> Any:
    s = settings.model_copy(update={"data_dir": data_dir, "database_url": settings.store_url})
    return SimpleNamespace(
        settings=s,
        store=open_store(s.store_url),
        artifacts=Artifacts(s),
        name="w1",
        shutdown=threading.Event(),
        presence=Presence("w1", "test", interval_s=60),  # never started: no row in the store
    )


def test_a_job_reads_its_dataset_from_an_https_url(
    https_root: tuple[str, Path, Path],
    make_client: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, site, cert = https_root
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    (site / "data.csv").write_bytes(CSV)
    client = make_client()  # no API keys: one user, who may reach loopback
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    spec = {
        "dataset": {"uri": f"{base}/data.csv", "target": "label"},
        "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 2, "device": "cpu"},
    }
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    # the local backend: the worker shares the API's data dir (its fetch cache too)
    execute(r.json()["id"], _worker(settings, settings.data_dir))
    job = client.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["environment"]["dataset"] == {
        "uri": f"{base}/data.csv",
        "sha256": hashlib.sha256(CSV).hexdigest(),
        "size_bytes": len(CSV),
    }
    r = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[0.1, 2.0]]})
    assert r.status_code == 200 and r.json()["predictions"][0] in ("x", "y")

    r = client.post("/v1/jobs", json={**spec, "dataset": {"uri": f"{base}/missing.csv"}})
    assert r.status_code == 422 and "answers 404" in r.text
    r = client.post("/v1/datasets", json={"uri": f"{base}/data.csv", "target": "label"})
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["n_samples"], r.json()["n_classes"]) == ("data.csv", 60, 2)

    # a limit under the object's size refuses it at the HEAD ...
    small = make_client(max_dataset_bytes=100)
    r = small.post("/v1/jobs", json=spec)
    assert r.status_code == 422 and "exceed the limit of 100" in r.text
    # ... and, where no size is announced, while streaming: no more than the limit is read
    r = small.post("/v1/jobs", json={**spec, "dataset": {"uri": f"{base}/stream/data.csv"}})
    assert r.status_code == 202, r.text
    small_settings: Settings = small.app.state.settings  # type: ignore[attr-defined]
    execute(r.json()["id"], _worker(small_settings, small_settings.data_dir))
    job = small.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "bad_data"
    assert job["error"]["message"] == "dataset.uri: the object exceeds the limit of 100 bytes"


def test_the_worker_fetches_under_the_jobs_egress_rule_not_its_own(
    https_root: tuple[str, Path, Path],
    make_client: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job admitted under a denying rule whose host resolves to loopback by the time a worker
    fetches it (DNS answers otherwise than at the API's check): the worker, keyless, would
    allow loopback by its own settings, yet obeys the rule recorded with the job."""
    base, site, cert = https_root
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    (site / "rebound.csv").write_bytes(CSV)
    client = make_client()  # keyless: admitted (the HEAD reaches loopback)
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    assert settings.admits_private_targets  # the worker below shares these settings
    spec = {
        "dataset": {"uri": f"{base}/rebound.csv", "target": "label"},
        "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 1, "device": "cpu"},
    }
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    worker = _worker(settings, settings.data_dir)
    # what an API with keys records for a host that resolved to a public address at submit
    with worker.store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(egress_private=False))
    execute(job_id, worker)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "bad_data", job
    assert "private" in job["error"]["message"], job
