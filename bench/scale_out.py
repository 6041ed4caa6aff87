"""Scale out: GET /v1/jobs/{id} throughput of two API processes on one PostgreSQL against one.

Both cases run the same client load, two wrk processes (-t1 -c32 each): against the one API
(both at its port), then one against each of the two APIs; the ratio is the second total over
the first, measured in turns (--rounds, medians). On a machine with fewer free cores than two
API processes, a database and the clients need, the ratio says so rather than the design.

Usage: python -m bench.scale_out [--seconds 5] [--rounds 2] [--json PATH]  (needs wrk)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.live import Live, free_port, live
from bench.service import TINY, _wait


def _wrk_together(urls: list[str], seconds: float) -> float:
    """Total requests per second of one wrk per url, all running at once."""
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", "-c32", f"-d{max(1, round(seconds))}s", url], stdout=subprocess.PIPE, text=True
        )
        for url in urls
    ]
    total = 0.0
    for p in procs:
        out, _ = p.communicate()
        if "Non-2xx" in out:
            raise RuntimeError(out)
        total += float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    return total


def _second_api(svc: Live) -> str:
    port = free_port()
    proc = svc.spawn("api2", ["api", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError((svc.root / "api2.log").read_text()[-3000:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("bench.scale_out needs wrk (apt-get install wrk)")
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with live(True, workers=1) as svc:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            job = _wait(http, http.post("/v1/jobs", json=TINY).json()["id"])
        path = f"/v1/jobs/{job['id']}"
        second = _second_api(svc)
        one, two = [], []
        for _ in range(args.rounds):
            one.append(_wrk_together([svc.url + path, svc.url + path], args.seconds))
            two.append(_wrk_together([svc.url + path, second + path], args.seconds))
    out.update(
        one_api_rps=statistics.median(one),
        two_apis_rps=statistics.median(two),
        runs={"one": one, "two": two},
    )
    out["ratio"] = out["two_apis_rps"] / out["one_api_rps"]
    print(
        f"GET /v1/jobs/{{id}} on PostgreSQL: one API {out['one_api_rps']:.0f} req/s, two APIs "
        f"{out['two_apis_rps']:.0f} req/s, ratio {out['ratio']:.2f}x (target ≥ 1.6; {out['cpus']} cores, "
        f"load {out['load_before']:.1f} before)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
