"""Reading CSVs as they come: service/data/tabular.py against pandas.read_csv.

    python -m bench.columns [--rows 190000] [--features 24] [--repeat 3] [--json PATH]

Writes two CSVs of about 46 MB at the defaults: all numbers (`rows` × `features` floats and an
integer label), and the same with strings and gaps (a quarter of the columns categorical
strings, 2% of every column's cells empty or "NA"). Each is read in a fresh process per reader
and repeat (file in, arrays out: pandas's DataFrame, or our matrix, column summary and labels),
and the best seconds of each are printed with the ratio (ours / pandas). The issue's bar: within
3× of pandas for numbers, and strings and gaps no worse than 2× the numbers' time.
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
import json, sys, time
from pathlib import Path
which, path = sys.argv[1], Path(sys.argv[2])
if which == "pandas":
    import pandas as pd
    run = lambda: pd.read_csv(path)
else:
    from service.data.datafile import parse_csv
    import service.data.tabular  # the reader's modules, loaded before the clock (as pandas's are)
    run = lambda: parse_csv(path, "label", max_rows=10**7, max_columns=10**4)
t = time.perf_counter()
run()
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def write_csv(path: Path, rows: int, features: int, *, strings: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    text = set(range(0, features, 4)) if strings else set()
    with path.open("w") as f:
        f.write(",".join([f"f{i}" for i in range(features)] + ["label"]) + "\n")
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            X = rng.normal(size=(n, features))
            cells = [[f"{v:.6f}" for v in X[:, j]] for j in range(features)]
            for j in text:
                cells[j] = [WORDS[k] for k in rng.integers(0, len(WORDS), size=n)]
            if strings:
                for j in range(features):
                    for i in np.flatnonzero(rng.random(n) < 0.02):
                        cells[j][i] = "NA" if i % 2 else ""
            y = rng.integers(0, 5, size=n)
            f.writelines(",".join([*(c[i] for c in cells), str(y[i])]) + "\n" for i in range(n))


def best(which: str, path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, which, str(path)], capture_output=True, text=True, check=True
        )
        times.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=190_000)
    ap.add_argument("--features", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, strings in (("numbers", False), ("strings_and_gaps", True)):
            path = Path(tmp) / f"{name}.csv"
            write_csv(path, args.rows, args.features, strings=strings)
            ours, theirs = best("ours", path, args.repeat), best("pandas", path, args.repeat)
            results[name] = {
                "mb": round(path.stat().st_size / 2**20, 1),
                "regtrain_s": round(ours, 3),
                "pandas_s": round(theirs, 3),
                "ratio": round(ours / theirs, 2),
            }
            print(name, results[name], flush=True)
    results["strings_over_numbers"] = round(
        results["strings_and_gaps"]["regtrain_s"] / results["numbers"]["regtrain_s"], 2
    )
    print("strings and gaps / numbers (ours):", results["strings_over_numbers"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
