"""Every benchmark of the project in one run, one table of ratios, one JSON file.

    python -m bench [--quick] [--fleet]

Each ratio compares regtrain with a baseline measured in the same run on the same machine:
the engine against the hand-written DataLoader loop (CPU; CUDA at batch 64 and 512 when a GPU
is present), a stacked sweep against the same trials one by one, the service against
`regtrain train` and a bare FastAPI endpoint. Figures go to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from bench import engine, service, sweep

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs and trials (a smoke run)")
    ap.add_argument("--fleet", action="store_true", help="the service benchmark on Redis + PostgreSQL")
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
    rows: list[tuple[str, str, float, str]] = []

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
    out["sweep_cpu"] = sweep.main(["--device", "cpu", "--trials", "4" if args.quick else "16"])
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

    print("\n== the service")
    svc_args = ["--jobs", "20" if args.quick else "100", "--seconds", "3" if args.quick else "5"]
    out["service"] = s = service.main(svc_args + (["--fleet"] if args.fleet else []))
    rows.append(
        ("regtrain train / service, 10-epoch digits job", s["backend"], 1 / s["service_over_cli"], "≥ 0.91")
    )
    rows.append(("GET /v1/jobs/{id} / bare FastAPI", s["backend"], s["get_over_bare"], "≥ 0.5"))

    print("\n" + f"{'ratio':48} {'case':28} {'measured':>9}  target")
    for name, case, value, target in rows:
        print(f"{name:48} {case:28} {value:9.2f}  {target}")
    print(
        f"{'dispatch POST → running p50 / p99 (ms)':48} {s['backend']:28} {s['dispatch_p50_ms']:5.1f} / {s['dispatch_p99_ms']:.1f}"
    )
    print(f"{'API resident memory after start (MB)':48} {'':28} {s['api_rss_mb_after_start']:9.0f}  ≤ 150")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{out['time'].replace(':', '')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
