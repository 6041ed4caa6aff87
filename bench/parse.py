"""CSV parsing: the former Python reader (bench/legacy_csv.py) against pyarrow (service/data/tabular.py).

    python -m bench.parse [--rows 190000] [--features 24] [--json PATH]

Writes a CSV of `rows` × `features` floats plus an integer label column (about 46 MB at the
defaults), then parses it in a fresh process per reader, as the API would (file in, feature
matrix and labels out), and prints rows, MB, seconds, the process's peak RSS and its growth
over the RSS before parsing, and the ratios (old / new).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
which, path = sys.argv[1], Path(sys.argv[2])
if which == "old":
    from bench.legacy_csv import parse_csv
    run = lambda: parse_csv(path.read_bytes(), "label")
else:
    from service.data.datafile import parse_csv
    # the reader's modules (pyarrow.csv, .compute, .parquet: ~19 MB of RSS on top of pyarrow) are
    # loaded before the baseline RSS, as the old reader's numpy is: a fixed cost of the process,
    # paid once at its first upload, not memory that grows with the data
    import service.data.tabular
    run = lambda: parse_csv(path, "label", max_rows=10**7, max_columns=10**4)
before = rss()
t = time.perf_counter()
out = run()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rows = len(out[0]) if isinstance(out, tuple) else out.n_samples
print(json.dumps({"seconds": seconds, "peak_rss": peak, "rss_before": before, "rows": rows}))
"""


def write_csv(path: Path, rows: int, features: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        f.write(",".join([f"f{i}" for i in range(features)] + ["label"]) + "\n")
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            X = rng.normal(size=(n, features))
            y = rng.integers(0, 5, size=n)
            block = np.column_stack([X, y])
            np.savetxt(f, block, fmt=["%.6f"] * features + ["%d"], delimiter=",")


def measure(which: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=190_000)
    ap.add_argument("--features", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        write_csv(path, args.rows, args.features)
        mb = path.stat().st_size / 1e6
        result: dict[str, Any] = {"rows": args.rows, "features": args.features, "mb": round(mb, 1)}
        for which in ("old", "new"):
            result[which] = measure(which, path)
    old, new = result["old"], result["new"]
    result["speedup"] = old["seconds"] / new["seconds"]
    result["growth_ratio"] = (old["peak_rss"] - old["rss_before"]) / max(
        1, new["peak_rss"] - new["rss_before"]
    )
    print(f"{'reader':8} {'rows':>8} {'MB':>6} {'seconds':>8} {'peak RSS MB':>12} {'growth MB':>10}")
    for which, name in (("old", "python"), ("new", "pyarrow")):
        r = result[which]
        growth = (r["peak_rss"] - r["rss_before"]) / 1e6
        print(
            f"{name:8} {r['rows']:8d} {mb:6.1f} {r['seconds']:8.2f} {r['peak_rss'] / 1e6:12.0f} {growth:10.0f}"
        )
    print(f"speedup {result['speedup']:.1f}x, memory growth ratio {result['growth_ratio']:.1f}x (old / new)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
