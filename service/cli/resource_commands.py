"""The `regtrain` commands for what a server holds beside jobs: sweeps, datasets, predictions
and deletes.

    regtrain sweeps [--status S] [--limit N]   regtrain upload FILE [--target COL] [--task T]
    regtrain datasets                          regtrain predict JOB FILE [--checkpoint best]
    regtrain delete ID

They share `client_commands`' options (--url, --json), its error handling and exit codes; the
handlers are registered in its HANDLERS table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from regtrain_client import Client, Dataset, NotFound, Sweep

from service.cli.tables import table

COMMANDS = ("sweeps", "datasets", "upload", "predict", "delete")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sweeps", parents=[common], help="the newest sweeps")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    sub.add_parser("datasets", parents=[common], help="uploaded and registered datasets, then the built-ins")
    p = sub.add_parser("upload", parents=[common], help="upload a CSV, Parquet or NPZ file as a dataset")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--target", help="the column to predict (default: the last)")
    p.add_argument("--task", choices=["classification", "regression"], help="default: inferred")
    p = sub.add_parser("predict", parents=[common], help="predict with a trained job, one line per row")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "file",
        metavar="FILE",
        help='rows to predict: a CSV with a header row, a JSON list of rows (or {"inputs": [...]}), '
        'or an NPZ with an array X ("-": JSON or CSV on standard input)',
    )
    p.add_argument("--checkpoint", default="best", help='"best" (default), "final" or "epoch-K"')
    p = sub.add_parser("delete", parents=[common], help="delete a finished job, or a dataset (ds-…)")
    p.add_argument("id", metavar="ID")


def _print_json(doc: Any, out: TextIO) -> None:
    print(json.dumps(doc, indent=2, default=str), file=out)


def sweeps(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    found = client.sweeps(status=args.status, limit=args.limit)
    if args.json:
        _print_json([s.model_dump(mode="json") for s in found], out)
        return 0
    rows = [_sweep_row(s) for s in found]
    print(table(rows, ["ID", "NAME", "STATUS", "TRIALS", "CREATED", "BEST"]), file=out)
    return 0


def _sweep_row(s: Sweep) -> list[Any]:
    ended = sum(1 for t in s.trials if t.status in ("succeeded", "failed", "cancelled", "pruned"))
    metric = str(s.objective.get("metric", "score"))
    best = ""
    if s.best is not None and s.best.score is not None:
        best = f"{metric} {s.best.score:.4f}"
    created = s.created_at.strftime("%Y-%m-%d %H:%M:%S") if s.created_at else ""
    return [s.id, s.name or "", s.status, f"{ended}/{len(s.trials)}", created, best]


def datasets(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    found = client.datasets()
    if args.json:
        _print_json([d.model_dump(mode="json") for d in found], out)
        return 0
    print(
        table([_dataset_row(d) for d in found], ["ID", "NAME", "TASK", "ROWS", "FEATURES", "CLASSES"]),
        file=out,
    )
    return 0


def _dataset_row(d: Dataset) -> list[Any]:
    return [d.id or "(built-in)", d.name, d.task, d.n_samples, d.n_features, d.n_classes]


def upload(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    ds = client.upload(args.file, target=args.target, task=args.task)
    if args.json:
        _print_json(ds.model_dump(mode="json"), out)
    else:
        print(ds.id, file=out)
    return 0


def predict(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    rows = read_rows(args.file)
    predictions = client.predict(args.job_id, rows, checkpoint=args.checkpoint)
    if args.json:
        _print_json(predictions, out)
    else:
        for p in predictions:
            print(p, file=out)
    return 0


def read_rows(name: str) -> list[Any]:
    """The rows of a prediction file: NPZ (X), JSON (a list, or an object with `inputs`) or
    CSV with a header row (numbers as numbers, empty cells as null, other cells as text)."""
    if name != "-" and Path(name).suffix.lower() == ".npz":
        import numpy as np

        with np.load(name, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise ValueError(f"{name}: an NPZ to predict holds an array X")
            rows: list[Any] = npz["X"].tolist()
            return rows
    text = sys.stdin.read() if name == "-" else Path(name).read_text()
    if text.lstrip()[:1] in ("[", "{"):
        doc = json.loads(text)
        found = doc.get("inputs") if isinstance(doc, dict) else doc
        if not isinstance(found, list):
            raise ValueError(f'{name}: JSON to predict is a list of rows or {{"inputs": [...]}}')
        return found
    reader = csv.reader(text.splitlines())
    next(reader, None)  # the header: rows are sent in the file's column order
    return [[_cell(c) for c in row] for row in reader if row]


def _cell(text: str) -> Any:
    if text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    # Dataset ids carry their prefix; anything else is a job (sweeps are kept, not deleted).
    if args.id.startswith("ds-"):
        client.delete_dataset(args.id)
        what = "dataset"
    else:
        try:
            client.delete(args.id)
        except NotFound:
            if _is_sweep(client, args.id):
                raise ValueError(f"{args.id} is a sweep; sweeps are kept (delete its jobs)") from None
            raise
        what = "job"
    if args.json:
        _print_json({"id": args.id, "deleted": what}, out)
    else:
        print(f"{what} {args.id}: deleted", file=out)
    return 0


def _is_sweep(client: Client, some_id: str) -> bool:
    try:
        client.sweep(some_id)
    except NotFound:
        return False
    return True
