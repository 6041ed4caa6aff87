"""Load test: N concurrent clients submit small jobs and poll them, against a live API with two
workers (started here, on the embedded default or with --fleet on Redis + PostgreSQL).

Each client submits a job (with an Idempotency-Key, so a retry after a dropped connection can
never make a second job), polls it until it finishes, and starts the next, until --jobs have
been submitted or --seconds have passed; then whatever is still running gets up to --drain
seconds to finish. A 429 is honoured (the client waits Retry-After). Printed at the end:

- submitted: jobs accepted (202); finished: those that reached a final state (succeeded or not);
- lost: accepted jobs the service does not know, or that vanished from the listing (must be 0);
- duplicated: jobs nobody submitted (a POST that made two) plus finished jobs whose metrics hold
  an epoch twice or miss one (must be 0);
- error responses: every response >= 400 other than a 429, by status; and the 429s apart;
- p50/p99 latency of submit (POST /v1/jobs) and of status (GET /v1/jobs/{id}), in ms;
- where a status's wait goes: server_ms, the API's own timing of each route (its
  regtrain_http_request_duration_seconds histogram: the bucket that holds the p50 and the p99); client_loop_lag_ms, how late this client's own event loop wakes
  from a 10 ms sleep (a busy client delays reading every response it is sent), and probe_ms,
  GET /healthz timed every 50 ms by a process of its own (the API's queue and event loop, with
  no store and no loaded client in the way);
- cpu_s: the CPU seconds (user + system) the API and the two workers used, a cost that the
  host's other load stretches in time but does not add to (--no-celery-events: without
  Celery's remote control and task events, to measure what they cost a fleet).

The users are aiohttp sessions, each with a connection of its own, made and connected before
the clock starts; they start over --ramp seconds (default 2), as a load tool's spawn rate;
--ramp 0 starts them all at once, a burst of --clients submits in the same millisecond.

Usage: python -m bench.load [--clients 64] [--jobs 256] [--seconds 120] [--ramp 2] [--fleet]
       [--no-celery-events] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.live import live

FINISHED = {"succeeded", "failed", "cancelled"}
SMALL_JOB = {
    "name": "load",
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2, "batch_size": 32, "device": "cpu", "checkpoint_every": 0},
}


class Tally:
    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}  # job id -> idempotency key
        self.final: dict[str, dict[str, Any]] = {}
        self.errors: Counter[int] = Counter()
        self.transport_errors = 0
        self.throttled = 0
        self.submit_ms: list[float] = []
        self.status_ms: list[float] = []
        self.budget_left = 0


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: Any


async def _request(http: aiohttp.ClientSession, tally: Tally, kind: str, method: str, url: str,
                   **kw: Any) -> Answer | None:  # fmt: skip
    """One request, timed until its whole body has been read and decoded."""
    t0 = time.perf_counter()
    try:
        async with http.request(method, url, **kw) as r:
            answer = Answer(r.status, r.headers.get("Retry-After"), await r.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError):
        tally.transport_errors += 1
        return None
    (tally.submit_ms if kind == "submit" else tally.status_ms).append((time.perf_counter() - t0) * 1e3)
    if answer.status == 429:
        tally.throttled += 1
    elif answer.status >= 400:
        tally.errors[answer.status] += 1
    return answer


async def connect(url: str, clients: int) -> list[aiohttp.ClientSession]:
    """One connection per user, opened (GET /healthz) before the clock starts, with aiohttp.

    The client shares the API's cores, so what it costs is latency the API did not cause. With
    httpx, one pool for all 64 users spent 59% of this process's CPU scanning its connections
    (AsyncConnectionPool._assign_requests_to_connections); one client per user still cost
    2.9 ms of CPU a request against aiohttp's 0.7 ms, and made this process, not the API, the
    largest user of the two cores. Each httpx client also built a TLS context (~15 ms) as it
    was made: made inside the timed loop, 64 of them held this event loop for a second while
    the first submits were in flight. So the sessions are all made, and connected, first."""
    timeout = aiohttp.ClientTimeout(total=30)
    made = [
        aiohttp.ClientSession(url, timeout=timeout, connector=aiohttp.TCPConnector(limit=1))
        for _ in range(clients)
    ]

    async def ready(http: aiohttp.ClientSession) -> None:
        async with http.get("/healthz") as r:
            r.raise_for_status()

    await asyncio.gather(*(ready(http) for http in made))
    return made


async def _user(http: aiohttp.ClientSession, tally: Tally, stop_submitting: float, stop_polling: float,
                poll_s: float, start_after_s: float) -> None:  # fmt: skip
    await asyncio.sleep(start_after_s)
    while time.monotonic() < stop_submitting and tally.budget_left > 0:
        tally.budget_left -= 1
        key = uuid.uuid4().hex
        job_id = None
        while job_id is None and time.monotonic() < stop_submitting:
            r = await _request(http, tally, "submit", "POST", "/v1/jobs", json=SMALL_JOB,
                               headers={"Idempotency-Key": key})  # fmt: skip
            if r is not None and r.status == 202:
                job_id = r.body["id"]
            elif r is not None and r.status == 429:
                await asyncio.sleep(min(float(r.retry_after or "1"), 5.0))
            elif r is None:  # a dropped connection: the same key makes the retry safe
                await asyncio.sleep(0.2)
            else:
                break  # an error response: counted; give up on this job
        if job_id is None:
            continue
        tally.accepted[job_id] = key
        while time.monotonic() < stop_polling:
            r = await _request(http, tally, "status", "GET", f"/v1/jobs/{job_id}")
            if r is not None and r.status == 200 and r.body["status"] in FINISHED:
                tally.final[job_id] = r.body
                break
            await asyncio.sleep(poll_s)


async def audit(http: httpx.AsyncClient, tally: Tally) -> dict[str, int]:
    """Compare what the clients were told with what the service holds."""
    listed: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/jobs", params=params)).json()
        listed |= {j["id"] for j in page["jobs"]}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    lost = 0
    for job_id in tally.accepted:
        if job_id not in listed or (await http.get(f"/v1/jobs/{job_id}")).status_code != 200:
            lost += 1
    duplicated = len(listed - set(tally.accepted))
    bad_metrics = 0
    for job_id, job in tally.final.items():
        if job["status"] != "succeeded":
            continue
        rows = (await http.get(f"/v1/jobs/{job_id}/metrics")).json()["epochs"]
        if [r["epoch"] for r in rows] != list(range(1, job["spec"]["training"]["epochs"] + 1)):
            bad_metrics += 1
    return {"lost": lost, "duplicated": duplicated + bad_metrics, "listed": len(listed)}


async def loop_lag(lags: list[float], stop: asyncio.Event, period_s: float = 0.01) -> None:
    """How late this process's event loop wakes from each `period_s` sleep, in ms."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(period_s)
        lags.append((time.perf_counter() - t0 - period_s) * 1e3)


def probe(url: str, seconds: float, out: multiprocessing.Queue[list[float]], every_s: float = 0.05) -> None:
    """GET /healthz every `every_s` for `seconds`, from a process apart from the load's clients;
    puts the latencies (ms) on `out`."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            http.get("/healthz")
            latencies.append((time.perf_counter() - t0) * 1e3)
            time.sleep(every_s)
    out.put(latencies)


def server_percentiles(metrics_text: str, method: str, route: str) -> dict[str, float]:
    """The upper bounds (ms) of the latency buckets that hold the p50 and p99 of one route, as
    the API timed it (every status summed)."""
    counts: Counter[float] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "regtrain_http_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels["method"] == method and labels["route"] == route:
                counts[float(labels["le"])] += sample.value
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] == 0:
        return {}
    total = counts[bounds[-1]]
    return {
        f"p{round(q * 100)}_le": next(b for b in bounds if counts[b] >= q * total) * 1e3 for q in (0.5, 0.99)
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(
    url: str, clients: int, jobs: int, seconds: float, drain: float, poll_s: float, ramp_s: float
) -> dict[str, Any]:
    tally = Tally()
    tally.budget_left = jobs
    lags: list[float] = []
    probed: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(url, seconds, probed), daemon=True)
    prober.start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            users = await connect(url, clients)
            stop_lag = asyncio.Event()
            lag = asyncio.create_task(loop_lag(lags, stop_lag))
            t0 = time.monotonic()
            stop_submitting = t0 + seconds
            try:
                await asyncio.gather(
                    *(
                        _user(
                            user,
                            tally,
                            stop_submitting,
                            stop_submitting + drain,
                            poll_s,
                            i * ramp_s / clients,
                        )
                        for i, user in enumerate(users)
                    )
                )
            finally:
                await asyncio.gather(*(user.close() for user in users))
            stop_lag.set()
            await lag
            elapsed = time.monotonic() - t0
            checked = await audit(http, tally)
            metrics_text = (await http.get("/metrics")).text
        probe_ms = probed.get(timeout=seconds + 60)
    finally:
        prober.join(timeout=5)
        if prober.is_alive():
            prober.kill()
            prober.join()
    statuses = Counter(j["status"] for j in tally.final.values())
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "submitted": len(tally.accepted),
        "finished": len(tally.final),
        "succeeded": statuses.get("succeeded", 0),
        "failed": statuses.get("failed", 0),
        "unfinished": len(tally.accepted) - len(tally.final),
        "lost": checked["lost"],
        "duplicated": checked["duplicated"],
        "error_responses": sum(tally.errors.values()),
        "errors_by_status": {str(k): v for k, v in sorted(tally.errors.items())},
        "throttled_429": tally.throttled,
        "transport_errors": tally.transport_errors,
        "jobs_per_second": round(len(tally.final) / elapsed, 2) if elapsed else 0.0,
        "submit_ms": {
            "p50": round(_pct(tally.submit_ms, 0.5), 1),
            "p99": round(_pct(tally.submit_ms, 0.99), 1),
            "n": len(tally.submit_ms),
        },
        "status_ms": {
            "p50": round(_pct(tally.status_ms, 0.5), 1),
            "p99": round(_pct(tally.status_ms, 0.99), 1),
            "n": len(tally.status_ms),
        },
        "server_submit_ms": server_percentiles(metrics_text, "POST", "/v1/jobs"),
        "server_status_ms": server_percentiles(metrics_text, "GET", "/v1/jobs/{job_id}"),
        "client_loop_lag_ms": {"p50": round(_pct(lags, 0.5), 1), "p99": round(_pct(lags, 0.99), 1)},
        "probe_ms": {"p50": round(_pct(probe_ms, 0.5), 1), "p99": round(_pct(probe_ms, 0.99), 1)},
    }


def _cpu_s(proc: Any) -> float:
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument("--jobs", type=int, default=256, help="most jobs to submit in all (default 256)")
    p.add_argument("--seconds", type=float, default=120, help="stop submitting after this long")
    p.add_argument("--drain", type=float, default=60, help="then wait this long for running jobs")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between status polls")
    p.add_argument(
        "--ramp",
        type=float,
        default=2.0,
        help="seconds over which the clients start, evenly (default 2: 32 a second for 64, as "
        "Locust's spawn rate); 0 starts them all at once, a burst of that many submits",
    )
    p.add_argument("--fleet", action="store_true", help="Redis + PostgreSQL instead of the embedded default")
    p.add_argument(
        "--worker-nice",
        type=int,
        default=19,
        help="REGTRAIN_WORKER_NICE of the two workers (default 19, the lowest priority): on one "
        "small machine, the cores a fleet's API would have to itself, while the workers train on "
        "what it leaves (status p99 45-49 ms at 19, 44-56 ms at 10); 0 to share them evenly",
    )
    p.add_argument(
        "--no-celery-events",
        action="store_true",
        help="REGTRAIN_CELERY_EVENTS=false: no Celery remote control or task events (on by default "
        "with --fleet, for `celery inspect` and Flower), to measure what they cost",
    )
    p.add_argument("--url", help="an API already running (with its own workers) instead of starting one")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.url:
        out = asyncio.run(
            run(args.url, args.clients, args.jobs, args.seconds, args.drain, args.poll, args.ramp)
        )
    else:
        # Two workers, as in the issue; one torch thread each (the host's cores are shared).
        env = {"OMP_NUM_THREADS": "1", "REGTRAIN_MAX_ACTIVE_JOBS": str(max(100, args.clients * 2))}
        if args.no_celery_events:
            env["REGTRAIN_CELERY_EVENTS"] = "false"
        with live(args.fleet, workers=2, extra_env=env, worker_nice=args.worker_nice) as svc:
            out = asyncio.run(
                run(svc.url, args.clients, args.jobs, args.seconds, args.drain, args.poll, args.ramp)
            )
            # CPU seconds each process used (user + system): a cost that a busy host's other
            # load stretches in time but does not add to, unlike the latencies
            out["cpu_s"] = {"api": _cpu_s(svc.api), "workers": sum(_cpu_s(p) for p in svc.procs[1:])}
    out["worker_nice"] = 0 if args.url else args.worker_nice
    out["ramp_s"] = args.ramp
    out["celery_events"] = not args.no_celery_events and args.fleet and not args.url
    out["backend"] = "fleet (Redis + PostgreSQL)" if args.fleet else "embedded (SQLite + filesystem broker)"
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
