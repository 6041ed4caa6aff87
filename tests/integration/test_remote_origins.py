"""Datasets by URI against a hostile origin (tests/integration/remote_origin.py: a process of its
own on loopback, with its own certificate), on both backends, with real API and worker processes:

- a gzip bomb (1 GiB from 1 MB) and a stacked one (`gzip, gzip`, 2.5 kB) are refused, at the
  byte limit or at the header, while the API's and the worker's peak RSS stay within 150 MB;
- 30 registrations, submits and validations trickling from 10 tenants' slow origins hold none
  of the API's 20 request threads: another tenant's reads, submits and /healthz answer while they
  are pending, a tenant past its slots gets 429 with Retry-After, and each ends at its deadline;
- a job whose data trickles ends `cancelled` soon after its cancel, and `failed` `time_limit`
  at its time_limit_s, instead of holding the worker.

The API's deadlines are short here (6 s for a HEAD, 8 s for a fetch) so that the tests are fast;
the worker's fetch deadline is a minute, so that only the cancel and the time limit end its fetch.
The bounds asserted on elapsed time are bounds on a hang (tens of seconds), not benchmarks:
bench/remote_stall.py measures the latencies.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from live_service import Service, base_env, fleet_backend
from remote_origin import Origin, as_json, origin, peak_rss_mb, reset_peak_rss, rss_mb

pytestmark = pytest.mark.integration

ATTACKERS = [f"a{i}" for i in range(10)]
SLOTS = 3  # REGTRAIN_REMOTE_REQUESTS_PER_TENANT here
LIMIT = 64 * 2**20  # REGTRAIN_MAX_DATASET_BYTES here
KEYS = {tenant: f"key-{tenant}" for tenant in [*ATTACKERS, "b"]}
# long enough that all 30 are still pending while the other tenant's requests are timed (on two
# busy cores, starting 30 exchanges takes a few seconds), short enough for a quick test
HEAD_DEADLINE_S, FETCH_DEADLINE_S = 6, 8
B = {"Authorization": "Bearer key-b"}
TINY = {"model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1, "device": "cpu"}}
# what other tenants' requests may take while the attack is pending: a bound on a stall (the
# attack the issue saw held them 224 s), not a latency target
PROMPT_S = 5.0
# a generous bound for what should take about a deadline or a heartbeat: a hang fails it
HANG_S = 30.0


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    with origin(tmp_path_factory.mktemp("origin")) as o:
        yield o


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def svc(
    request: pytest.FixtureRequest, org: Origin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"remote-{request.param}")
    env = base_env(root / "data")
    env.update(
        REGTRAIN_API_KEYS=",".join(f"{t}:{k}" for t, k in KEYS.items()),
        # the origin is on loopback, which keys would otherwise refuse
        REGTRAIN_EGRESS_PRIVATE_TARGETS="true",
        REGTRAIN_WEBHOOK_PRIVATE_TARGETS="true",
        SSL_CERT_FILE=str(org.cert),
        REGTRAIN_REMOTE_HEAD_DEADLINE_S=str(HEAD_DEADLINE_S),
        REGTRAIN_REMOTE_FETCH_DEADLINE_S=str(FETCH_DEADLINE_S),
        REGTRAIN_REMOTE_REQUESTS_PER_TENANT=str(SLOTS),
        REGTRAIN_MAX_DATASET_BYTES=str(LIMIT),
        REGTRAIN_MAX_UPLOAD_BYTES=str(LIMIT),
        REGTRAIN_DB_POOL_SIZE="20",  # the API's request threads: fewer than the attack's exchanges
    )

    def own_env(label: str) -> dict[str, str]:
        # a worker's fetch ends only at the job's cancel or time limit within these tests
        return {"REGTRAIN_REMOTE_FETCH_DEADLINE_S": "60"} if label.startswith("worker") else {}

    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        s = Service(request.param, env, root, own_env=own_env)
        stack.callback(s.close)
        s.http.headers.update(B)
        yield s


def _job_spec(uri: str, **training: Any) -> dict[str, Any]:
    return {**TINY, "dataset": {"uri": uri, "target": "label"}, "training": {**TINY["training"], **training}}


def test_gzip_bombs_are_refused_within_150_mb_of_idle_rss(svc: Service, org: Origin) -> None:
    # warm up: both processes load what a dataset by URI needs (the worker: torch, by training)
    r = svc.http.post("/v1/datasets", json={"uri": f"{org.url}/data.csv", "target": "label"})
    assert r.status_code == 201, r.text
    svc.wait(svc.submit(_job_spec(f"{org.url}/data.csv"))["id"], until={"succeeded"})

    pids = {"api": svc.api.pid, "worker": svc.workers[0].pid}
    idle = {name: rss_mb(pid) for name, pid in pids.items()}
    fresh = {name: reset_peak_rss(pid) for name, pid in pids.items()}
    before = {name: peak_rss_mb(pid) for name, pid in pids.items()}

    r = svc.http.post("/v1/datasets", json={"uri": f"{org.url}/bomb-stacked.csv"})
    assert r.status_code == 400 and "stacks encodings" in r.text, r.text
    r = svc.http.post("/v1/datasets", json={"uri": f"{org.url}/bomb.csv"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == f"uri: the object exceeds the limit of {LIMIT:,} bytes"
    for name in ("bomb.csv", "bomb-stacked.csv"):
        job = svc.wait(svc.submit(_job_spec(f"{org.url}/{name}"))["id"], until={"failed"}, timeout=HANG_S)
        assert job["error"]["type"] == "bad_data", job["error"]
        assert job["error"]["message"].startswith("dataset.uri: "), job["error"]
        assert ("exceeds the limit" if name == "bomb.csv" else "stacks encodings") in job["error"]["message"]

    for name, pid in pids.items():
        peak = peak_rss_mb(pid)
        print(f"{svc.backend} {name}: idle RSS {idle[name]:.0f} MB, peak under the bombs {peak:.0f} MB")
        # VmHWM only grows: restarted above where the kernel allows it, else the lifetime's peak
        bound = idle[name] + 150 if fresh[name] else max(before[name], idle[name] + 150)
        assert peak < bound, (name, idle[name], peak)


def _attack(svc: Service, org: Origin, tenant: str, kind: str, n: int) -> Callable[[], httpx.Response]:
    uri = f"{org.url}/slow/{tenant}-{kind}-{n}.csv"

    def send() -> httpx.Response:
        with httpx.Client(base_url=svc.url, headers=auth(tenant), timeout=HANG_S * 2) as http:
            if kind == "register":
                return http.post("/v1/datasets", json={"uri": uri, "target": "label"})
            return http.post("/v1/jobs" if kind == "submit" else "/v1/jobs:validate", json=_job_spec(uri))

    return send


def test_slow_origins_stall_no_other_tenant_and_end_at_their_deadline(svc: Service, org: Origin) -> None:
    kinds = ("register", "submit", "validate")
    attacks = [
        (t, kinds[n % 3], _attack(svc, org, t, kinds[n % 3], n)) for t in ATTACKERS for n in range(SLOTS)
    ]
    results: dict[int, tuple[float, httpx.Response | BaseException]] = {}
    already = org.count()["slow"]

    def run(i: int, send: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            r: httpx.Response | BaseException = send()
        except BaseException as e:  # reported below, with the others
            r = e
        results[i] = (time.monotonic() - started, r)

    threads = [threading.Thread(target=run, args=(i, send)) for i, (_, _, send) in enumerate(attacks)]
    for t in threads:
        t.start()
    try:
        seen = org.wait_for("slow", already + len(attacks), timeout=HANG_S)
        assert seen["slow"] >= already + len(attacks), seen  # every exchange is pending at the origin

        # a tenant with its slots taken: 429 and Retry-After, at once, for each kind of request
        for kind in kinds:
            r = _attack(svc, org, "a0", kind, 99)()
            assert r.status_code == 429, (kind, r.text)
            assert int(r.headers["Retry-After"]) > 0 and "in progress" in r.text

        # another tenant: reads, submits and /healthz answer while all 30 are pending
        with httpx.Client(base_url=svc.url, headers=B, timeout=PROMPT_S) as b:
            for _ in range(3):
                assert b.get("/healthz").status_code == 200
                assert b.get("/v1/datasets").status_code == 200
                r = b.post("/v1/jobs", json={**TINY, "dataset": {"name": "iris"}})
                assert r.status_code == 202, r.text
                assert b.get(f"/v1/jobs/{r.json()['id']}").status_code == 200
                assert (
                    b.post("/v1/jobs:validate", json={**TINY, "dataset": {"name": "iris"}}).status_code == 200
                )
        # ... and more of them were still pending than the API has request threads
        assert org.count()["slow"] - already > 20
    finally:
        for t in threads:
            t.join(timeout=HANG_S * 2)

    for i, (tenant, kind, _) in enumerate(attacks):
        elapsed, r = results[i]
        assert isinstance(r, httpx.Response), (tenant, kind, r)
        assert elapsed < HANG_S, (tenant, kind, elapsed)
        if kind == "register":
            assert r.status_code == 400, r.text
            assert r.json()["detail"].startswith("uri: ") and f"deadline of {FETCH_DEADLINE_S} s" in r.text, (
                r.text
            )
        else:
            assert r.status_code == 422, r.text
            first = r.json()["detail"][0]
            assert (
                first["loc"] == ["body", "dataset", "uri"]
                and f"deadline of {HEAD_DEADLINE_S} s" in first["msg"]
            ), as_json(r)
    # the API closed every connection it gave up on
    deadline = time.monotonic() + HANG_S
    while org.count()["slow"] > already and time.monotonic() < deadline:
        time.sleep(0.2)
    assert org.count()["slow"] <= already


def _running_in_fetch(svc: Service, org: Origin, spec: dict[str, Any]) -> str:
    before = org.count()["slow"]
    job_id = svc.submit(spec)["id"]
    svc.wait(job_id, until={"running"}, timeout=HANG_S)
    seen = org.wait_for("slow", before + 1, timeout=HANG_S)  # the worker's GET trickles
    assert seen["slow"] > before, seen
    return job_id


def test_a_cancel_ends_a_job_in_its_data_fetch(svc: Service, org: Origin) -> None:
    job_id = _running_in_fetch(svc, org, _job_spec(f"{org.url}/slow-body/cancel-{svc.backend}.csv"))
    r = svc.http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202, r.text
    cancelled_at = time.monotonic()
    job = svc.wait(job_id, until={"cancelled"}, timeout=HANG_S)
    # the contract: within 5 s of the cancel (a heartbeat, 0.3 s here, and a poll of the fetch)
    assert time.monotonic() - cancelled_at < 5, job
    assert job["error"] is None and job["result"] is None
    # and the worker takes the next job: another tenant's is not queued behind the origin
    svc.wait(svc.submit({**TINY, "dataset": {"name": "iris"}})["id"], until={"succeeded"}, timeout=HANG_S * 2)


def test_the_time_limit_ends_a_job_in_its_data_fetch(svc: Service, org: Origin) -> None:
    spec = _job_spec(f"{org.url}/slow-body/limit-{svc.backend}.csv", time_limit_s=3)
    job_id = _running_in_fetch(svc, org, spec)
    job = svc.wait(job_id, until={"failed"}, timeout=HANG_S)
    assert job["error"]["type"] == "time_limit", job["error"]
    assert "while fetching dataset.uri" in job["error"]["message"], job["error"]
