"""Another tenant's latency while slow origins are pending: a real API (uvicorn) and worker on the
embedded backend, a hostile HTTPS origin on loopback (tests/integration/remote_origin.py: a byte
per second), and `--pending` registrations, submits and validations of datasets at its slow URIs
from attacker tenants (REGTRAIN_REMOTE_REQUESTS_PER_TENANT each, so as many tenants as that
takes), left pending while tenant B's reads are timed: GET /v1/datasets, GET /v1/jobs,
GET /v1/jobs/{id}, /healthz, and POST /v1/jobs (a built-in dataset).

Prints, for each of "idle" and "N pending": p50 and p99 of each of B's requests (ms), the load
average, and how many exchanges the origin held open while B was timed. Before this round the
same attack held the API's 20 request threads and B waited for minutes.

Usage: python -m bench.remote_stall [--pending 50] [--rounds 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from live_service import Service, base_env
from remote_origin import Origin, origin

PER_TENANT = 4
DEADLINE_S = 120  # the attack stays pending while B is timed
TINY = {"model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1, "device": "cpu"}}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _time_b(svc: Service, rounds: int) -> dict[str, dict[str, float]]:
    took: dict[str, list[float]] = {}
    with httpx.Client(base_url=svc.url, headers={"Authorization": "Bearer key-b"}, timeout=300) as b:
        job_id = b.post("/v1/jobs", json={**TINY, "dataset": {"name": "iris"}}).json()["id"]
        requests = {
            "GET /healthz": lambda: b.get("/healthz"),
            "GET /v1/datasets": lambda: b.get("/v1/datasets"),
            "GET /v1/jobs": lambda: b.get("/v1/jobs"),
            "GET /v1/jobs/{id}": lambda: b.get(f"/v1/jobs/{job_id}"),
        }
        for n in range(rounds):
            for name, send in requests.items():
                started = time.perf_counter()
                r = send()
                took.setdefault(name, []).append(1000 * (time.perf_counter() - started))
                assert r.status_code == 200, (name, r.text)
            if n % 10 == 0:  # a few submits: each queues a job the worker then trains
                started = time.perf_counter()
                r = b.post("/v1/jobs", json={**TINY, "dataset": {"name": "iris"}})
                took.setdefault("POST /v1/jobs", []).append(1000 * (time.perf_counter() - started))
                assert r.status_code == 202, r.text
    return {
        name: {"p50_ms": statistics.median(ms), "p99_ms": _percentile(ms, 0.99), "n": len(ms)}
        for name, ms in took.items()
    }


def _attack(svc: Service, org: Origin, pending: int) -> list[threading.Thread]:
    kinds = ("register", "submit", "validate")

    def send(tenant: str, kind: str, n: int) -> None:
        uri = f"{org.url}/slow/{tenant}-{n}.csv"
        spec = {**TINY, "dataset": {"uri": uri, "target": "label"}}
        with httpx.Client(
            base_url=svc.url, headers={"Authorization": f"Bearer key-{tenant}"}, timeout=600
        ) as h:
            if kind == "register":
                h.post("/v1/datasets", json={"uri": uri, "target": "label"})
            else:
                h.post("/v1/jobs" if kind == "submit" else "/v1/jobs:validate", json=spec)

    threads = [
        threading.Thread(target=send, args=(f"a{n // PER_TENANT}", kinds[n % 3], n), daemon=True)
        for n in range(pending)
    ]
    for t in threads:
        t.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tenants = [f"a{i}" for i in range(math.ceil(args.pending / PER_TENANT))] + ["b"]
    out: dict[str, Any] = {"pending": args.pending, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with origin(root) as org:
            env = base_env(root / "data")
            env.update(
                REGTRAIN_API_KEYS=",".join(f"{t}:key-{t}" for t in tenants),
                REGTRAIN_EGRESS_PRIVATE_TARGETS="true",
                REGTRAIN_WEBHOOK_PRIVATE_TARGETS="true",
                SSL_CERT_FILE=str(org.cert),
                REGTRAIN_REMOTE_HEAD_DEADLINE_S=str(DEADLINE_S),
                REGTRAIN_REMOTE_FETCH_DEADLINE_S=str(DEADLINE_S),
                REGTRAIN_REMOTE_REQUESTS_PER_TENANT=str(PER_TENANT),
            )
            svc = Service("embedded", env, root)
            try:
                _time_b(svc, 5)  # warm up
                out["idle"] = {"load_avg": os.getloadavg(), "b": _time_b(svc, args.rounds)}
                threads = _attack(svc, org, args.pending)
                seen = org.wait_for("slow", args.pending, timeout=60)
                b = _time_b(svc, args.rounds)
                out["pending_run"] = {
                    "load_avg": os.getloadavg(),
                    "origin_open_before": seen["slow"],
                    "origin_open_after": org.count()["slow"],
                    "b": b,
                }
                del threads  # daemon threads: they end at the deadline, or with the process
            finally:
                svc.close()
    for phase, label in (("idle", "idle"), ("pending_run", f"{args.pending} pending")):
        data = out[phase]
        extra = (
            f", origin held {data['origin_open_before']} open before and {data['origin_open_after']} after"
            if phase == "pending_run"
            else ""
        )
        print(f"{label}: load average {data['load_avg'][0]:.2f}{extra}")
        for name, s in data["b"].items():
            print(f"  {name:20s} p50 {s['p50_ms']:7.1f} ms   p99 {s['p99_ms']:7.1f} ms   (n={s['n']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
