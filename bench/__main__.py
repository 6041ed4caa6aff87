"""Every benchmark of the project in one run, one table of ratios, one JSON file.

    python -m bench [--quick] [--only service] [--peers]

Each ratio compares regtrain with a baseline measured in the same run on the same machine:
the engine against the hand-written DataLoader loop (CPU; CUDA at batch 64 and 512 when a GPU
is present), a stacked sweep against the same trials one by one, the service against
`regtrain train` and a bare FastAPI endpoint, on both backends (SQLite + the file broker, and
PostgreSQL + Redis); a full store (100,000 finished jobs) against an empty one; the load test's
latencies on the fleet; two API processes against one; with --peers, regtrain's search against
an Optuna script and Ray Tune and issue 21's other targets (bench/peers.py --all: about ten more
minutes on two cores). Figures go to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from bench import engine, full_store, load, peers, scale_out, service, sweep

RESULTS = Path(__file__).parent / "results"
Rows = list[tuple[str, str, float, str]]  # (ratio, case, measured, target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs and trials (a smoke run)")
    ap.add_argument("--only", choices=["service"], help="only the service's benchmarks (no torch work)")
    ap.add_argument("--peers", action="store_true", help="also bench.peers --all (issue 21's targets)")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.node(),
        "cpus": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if cuda else None,
    }
    rows: Rows = []
    if args.only != "service":
        _engine_and_sweep(args.quick, cuda, out, rows)
    _service(args.quick, out, rows)
    if args.peers:
        _peers(args.quick, out, rows)
    print("\n" + f"{'ratio':56} {'case':24} {'measured':>9}  target")
    for name, case, value, target in rows:
        print(f"{name:56} {case:24} {value:9.2f}  {target}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{out['time'].replace(':', '')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nfigures written to {path}")


def _engine_and_sweep(quick: bool, cuda: bool, out: dict[str, Any], rows: Rows) -> None:

    print("== engine vs hand-written loop")
    out["engine_cpu"] = engine.main(["--device", "cpu", "--batch", "64"])
    for r in out["engine_cpu"]["runs"]:
        rows.append(("engine / hand loop, cpu", f"batch {r['batch']}", r["speedup"], "≥ 1.2"))
        rows.append(
            ("engine peak memory / hand loop, cpu", f"batch {r['batch']}", r["memory_ratio"], "≤ 1.5")
        )
    if cuda:
        out["engine_cuda"] = engine.main(["--device", "cuda", "--batch", "64,512"])
        for r in out["engine_cuda"]["runs"]:
            rows.append(("engine / hand loop, cuda", f"batch {r['batch']}", r["speedup"], "≥ 12"))

    print("\n== stacked sweep vs trial by trial")
    out["sweep_cpu"] = sweep.main(["--device", "cpu", "--trials", "4" if quick else "16"])
    for r in out["sweep_cpu"]:
        rows.append(
            (
                "stacked sweep / one by one, cpu",
                f"{r['trials']} trials, batch {r['batch']}",
                r["speedup"],
                "≥ 1.5",
            )
        )
    if cuda:
        out["sweep_cuda"] = sweep.main(["--device", "cuda", "--trials", "64"])
        for r in out["sweep_cuda"]:
            rows.append(
                (
                    "stacked sweep / one by one, cuda",
                    f"{r['trials']} trials, batch {r['batch']}",
                    r["speedup"],
                    "≥ 15",
                )
            )


def _peers(quick: bool, out: dict[str, Any], rows: Rows) -> None:
    print("\n== regtrain's search against its peers (bench/peers.py)")
    argv = ["--all", *(["--problem", "digits", "--skip-ray"] if quick else [])]
    out["peers"] = peers.main(argv)
    for r in out["peers"]["rows"]:
        rows.append((r["what"], r["case"], r["measured"], r["target"]))


def _service(quick: bool, out: dict[str, Any], rows: Rows) -> None:
    svc_args = ["--jobs", "20" if quick else "100", "--seconds", "3" if quick else "5"]
    for fleet in (False, True):
        print("\n== the service, " + ("PostgreSQL + Redis" if fleet else "SQLite + the file broker"))
        s = service.main(svc_args + (["--fleet"] if fleet else []))
        out[f"service_{s['backend']}"] = s
        backend = s["backend"]
        rows.append(
            ("regtrain train / service, 10-epoch digits job", backend, 1 / s["service_over_cli"], "≥ 0.91")
        )
        rows.append(("GET /v1/jobs/{id} / bare FastAPI", backend, s["get_over_bare"], "≥ 0.5"))
        rows.append(("dispatch POST → running p50 (ms)", backend, s["dispatch_p50_ms"], "≤ 10"))
        rows.append(("API resident memory after start (MB)", backend, s["api_rss_mb_after_start"], "≤ 150"))
        print(f"\n== a full store against an empty one, {backend}")
        f = full_store.main(["--jobs", "10000" if quick else "100000"] + (["--fleet"] if fleet else []))
        out[f"full_store_{f['backend']}"] = f
        for name, target in full_store.TARGETS.items():
            rows.append(
                (
                    f"full / empty store cost, {full_store.PATHS[name]}",
                    backend,
                    f["cost_ratio"][name],
                    f"≤ {target}",
                )
            )
    print("\n== load: 64 clients on the fleet, two workers training")
    ld = load.main(
        [
            "--clients",
            "64",
            "--jobs",
            "64" if quick else "256",
            "--seconds",
            "20" if quick else "60",
            "--fleet",
        ]
    )
    out["load"] = ld
    rows.append(("load: submit p99 (ms)", "64 clients, fleet", ld["submit_ms"]["p99"], "≤ 150"))
    rows.append(("load: status p99 (ms)", "64 clients, fleet", ld["status_ms"]["p99"], "≤ 50"))
    rows.append(("load: lost + duplicated jobs", "64 clients, fleet", ld["lost"] + ld["duplicated"], "= 0"))
    print("\n== scale out: two API processes on one PostgreSQL against one")
    so = scale_out.main(["--seconds", "3" if quick else "5"])
    out["scale_out"] = so
    rows.append(("GET throughput, two APIs / one", f"{so['cpus']} cores", so["ratio"], "≥ 1.6"))


if __name__ == "__main__":
    main()
