"""What the service costs on top of the engine, measured against baselines in the same run.

- dispatch latency, POST → running (server timestamps), p50 and p99 over small jobs, one at a time
- a 10-epoch digits job through the service against the same spec through `regtrain train`
- GET /v1/jobs/{id} requests per second against a bare FastAPI endpoint serving the same document
- resident memory of the API process after start

Usage: python -m bench.service [--fleet] [--jobs 100] [--seconds 5] [--json PATH]
(--fleet: Redis + PostgreSQL, as in production; default: the embedded SQLite + file broker)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.live import Live, free_port, live

TINY = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 1, "checkpoint_every": 0},
}
DIGITS_10 = json.loads((Path(__file__).parent.parent / "examples" / "digits-l2.json").read_text())
DIGITS_10["training"]["epochs"] = 10

BARE_APP = """
import json, os
from fastapi import FastAPI
app = FastAPI()
DOC = json.loads(open(os.environ["BENCH_DOC"]).read())
@app.get("/v1/jobs/{job_id}")
def job(job_id: str) -> dict:
    return DOC
"""


def _wait(http: httpx.Client, job_id: str, poll: float = 0.02, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)
    raise TimeoutError(job_id)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def dispatch(svc: Live, n: int) -> dict[str, float]:
    latencies = []
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        _wait(http, http.post("/v1/jobs", json=TINY).json()["id"])  # the worker is up and warm
        for _ in range(n):
            job = http.post("/v1/jobs", json=TINY).json()
            done = _wait(http, job["id"], poll=0.01)
            t0 = datetime.fromisoformat(done["created_at"])
            t1 = datetime.fromisoformat(done["started_at"])
            latencies.append((t1 - t0).total_seconds() * 1000)
    return {"dispatch_p50_ms": _pct(latencies, 0.5), "dispatch_p99_ms": _pct(latencies, 0.99), "jobs": n}


def service_vs_cli(svc: Live) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(DIGITS_10))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "service.cli", "train", str(spec), "--out", f"{tmp}/out"],
                       check=True, capture_output=True)  # fmt: skip
        cli = time.perf_counter() - t
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        t = time.perf_counter()
        job = http.post("/v1/jobs", json=DIGITS_10).json()
        done = _wait(http, job["id"])
        service = time.perf_counter() - t
    assert done["status"] == "succeeded", done["error"]
    return {"cli_s": cli, "service_s": service, "service_over_cli": service / cli}


def _rps(url: str, path: str, seconds: float, threads: int = 8, connections: int = 32) -> float:
    """Requests per second: wrk -t1 -c`connections` where it is installed (a client that costs
    the server's two cores little), else `threads` Python clients."""
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url + path],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if "Non-2xx" in out:
            raise RuntimeError(out)
        return float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    count = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while time.monotonic() < stop:
                http.get(path).raise_for_status()
                count[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(count) / seconds


def get_throughput(svc: Live, seconds: float) -> dict[str, float]:
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        job = _wait(http, http.post("/v1/jobs", json=TINY).json()["id"])
    root = Path(tempfile.mkdtemp())
    (root / "doc.json").write_text(json.dumps(job))
    (root / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    # The same process model as `regtrain api`: one uvicorn process, its access log on (info),
    # written to a file.
    log = open(root / "bare.log", "wb")  # noqa: SIM115 (closed with the process)
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level", "info"],
        cwd=root, env={**svc.env, "BENCH_DOC": str(root / "doc.json")}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/jobs/x", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        regtrain = _rps(svc.url, f"/v1/jobs/{job['id']}", seconds)
        baseline = _rps(f"http://127.0.0.1:{port}", f"/v1/jobs/{job['id']}", seconds)
    finally:
        bare.terminate()
        bare.wait()
        log.close()
    return {"get_rps": regtrain, "bare_rps": baseline, "get_over_bare": regtrain / baseline}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet", action="store_true", help="Redis + PostgreSQL instead of the embedded default")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"backend": "redis+postgresql" if args.fleet else "sqlite+files"}
    with live(args.fleet, workers=1) as svc:
        out["api_rss_mb_after_start"] = svc.rss_mb(svc.api)
        out.update(dispatch(svc, args.jobs))
        out.update(service_vs_cli(svc))
        out.update(get_throughput(svc, args.seconds))
    print(f"backend                       {out['backend']}")
    print(f"API resident memory at start  {out['api_rss_mb_after_start']:.0f} MB")
    print(
        f"dispatch POST → running       p50 {out['dispatch_p50_ms']:.1f} ms   p99 {out['dispatch_p99_ms']:.1f} ms  ({args.jobs} jobs)"
    )
    print(
        f"10-epoch digits job           service {out['service_s']:.2f} s   regtrain train {out['cli_s']:.2f} s   ratio {out['service_over_cli']:.2f}x"
    )
    print(
        f"GET /v1/jobs/{{id}}             {out['get_rps']:.0f} req/s   bare FastAPI {out['bare_rps']:.0f} req/s   ratio {out['get_over_bare']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
