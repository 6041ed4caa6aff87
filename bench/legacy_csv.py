"""The CSV reader regtrain had before pyarrow (a Python loop over every cell), kept as the
baseline of bench.parse. Not used by the service."""

from __future__ import annotations

import csv
import io

import numpy as np


def parse_csv(raw: bytes, target: str | None) -> tuple[np.ndarray, np.ndarray]:
    text = raw.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    target = target or header[-1]
    t = header.index(target)
    rows: list[list[str]] = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError("ragged CSV")
        rows.append(row)
    features = [i for i in range(len(header)) if i != t]
    X = np.empty((len(rows), len(features)), dtype=np.float32)
    for r, row in enumerate(rows):
        for j, i in enumerate(features):
            X[r, j] = float(row[i])
    return X, np.array([row[t].strip() for row in rows])
