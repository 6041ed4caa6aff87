"""Contestant: regtrain's search over HTTP, on the embedded default as a user starts it.

`regtrain up` (the API and one worker; SQLite and the file broker in a fresh data dir), the
problem's data built in (`digits`) or uploaded as an NPZ through POST /v1/datasets, then POST
/v1/sweeps: TPE over bench/peers_loop.py's space, `trials` trials, ASHA (grace 2 epochs,
reduction factor 3), objective val_accuracy, MLP with one hidden layer, Adam, batch 64. Timed by
the server's own timestamps: the sweep's created_at → its finished_at (`succeeded`: the best trial
retrained on train + validation and tested). The service is started before and stopped after
each turn, so the peers' turns run on a machine it does not share.

Usage: python -m bench.peers_regtrain [--problem digits] [--trials 32] [--epochs 20]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import peers_data, peers_loop
from bench.live import free_port
from bench.peers_outcome import Outcome, contestant_main

READY_TIMEOUT_S = 120
SWEEP_TIMEOUT_S = 1800
FINISHED = ("succeeded", "failed", "cancelled")


def space() -> dict[str, dict[str, list[float]]]:
    """bench/peers_loop.py's SPACE as a regtrain sweep spells it."""
    kind = {"log": "log_uniform", "uniform": "uniform"}
    return {name: {kind[scale]: [lo, hi]} for name, (scale, lo, hi) in peers_loop.SPACE.items()}


def sweep_doc(dataset: dict[str, Any], hidden: int, trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "bench-peers",
        "base": {
            "dataset": dataset,
            "model": {"type": "mlp", "hidden": [hidden]},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": epochs, "batch_size": peers_loop.BATCH, "seed": 0, "device": "cpu"},
        },
        "sampler": "tpe",
        "space": space(),
        "trials": trials,
        "pruner": {"type": "asha", "grace_epochs": 2, "reduction_factor": 3},
        "objective": {"metric": "val_accuracy", "mode": "max"},
    }


def _descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc), so that none outlives the bench."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM `regtrain up` (it stops its worker), then make sure every child has gone."""
    below = _descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    for pid in below:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def _wait_ready(http: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    """The API answers /readyz and the worker has written its heartbeat (GET /v1/workers)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if http.get("/readyz").status_code == 200 and http.get("/v1/workers").json()["workers"]:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"regtrain up did not get ready:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def service() -> Iterator[httpx.Client]:
    """`regtrain up` on a free port with a fresh data dir; a client on it, once the worker is ready."""
    with tempfile.TemporaryDirectory(prefix="regtrain-bench-peers-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
        env.update(REGTRAIN_DATA_DIR=str(Path(tmp) / "data"), PYTHONUNBUFFERED="1")
        log = Path(tmp) / "up.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                _wait_ready(http, proc, log)
                yield http
        finally:
            _end(proc)


def _dataset(http: httpx.Client, p: peers_data.Problem) -> dict[str, Any]:
    if p.name == "digits":
        return {"name": "digits"}
    files = {"file": (f"{p.name}.npz", peers_data.npz_bytes(p), "application/octet-stream")}
    r = http.post("/v1/datasets", files=files)
    r.raise_for_status()
    return {"id": r.json()["id"]}


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def wait_sweep(http: httpx.Client, sweep_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while time.monotonic() < deadline:
        doc: dict[str, Any] = http.get(f"/v1/sweeps/{sweep_id}").json()
        if doc["status"] in FINISHED:
            return doc
        time.sleep(1.0)  # the times are the server's: polling adds no error, only load (on the same cores)
    raise TimeoutError(f"sweep {sweep_id} did not finish in {SWEEP_TIMEOUT_S} s")


def timeline(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per trial: its unit, status, epochs, and started/finished in seconds after the POST."""
    t0 = _at(doc["created_at"])

    def since(stamp: str | None) -> float | None:
        return None if stamp is None else round((_at(stamp) - t0).total_seconds(), 3)

    return [
        {
            "index": t["index"],
            "unit": t.get("unit"),
            "status": t["status"],
            "epochs": t.get("epochs_trained"),
            "started": since(t.get("started_at")),
            "finished": since(t.get("finished_at")),
        }
        for t in doc["trials"]
    ]


def outcome(doc: dict[str, Any], problem: str) -> Outcome:
    """The Outcome of a finished sweep document."""
    if doc["status"] != "succeeded":
        raise RuntimeError(f"the sweep ended {doc['status']}: {doc.get('error')}")
    t0, best = _at(doc["created_at"]), doc["best"]
    by_index = {t["index"]: t for t in doc["trials"]}
    # best_known_at (issue 21); before it, when the best trial finished
    known = doc.get("best_known_at") or by_index[best["index"]]["finished_at"]
    ends = [_at(t["finished_at"]) for t in doc["trials"] if t.get("finished_at")]
    return Outcome(
        contestant="regtrain",
        problem=problem,
        wall_s=(_at(doc["finished_at"]) - t0).total_seconds(),
        best_at_s=(_at(known) - t0).total_seconds(),
        best_val=float(best["score"]),
        test=float((best.get("test_metrics") or {})["test_accuracy"]),
        trial_epochs=sum(t.get("epochs_trained") or 0 for t in doc["trials"]),
        trials=len(doc["trials"]),
        pruned=sum(t["status"] == "pruned" for t in doc["trials"]),
        search_s=(max(ends) - t0).total_seconds() if ends else None,
        notes={"sweep_id": doc["id"], "best_known_at": doc.get("best_known_at"), "timeline": timeline(doc)},
    )


def run(problem: str, trials: int, epochs: int) -> Outcome:
    p = peers_data.problem(problem)
    with service() as http:
        doc = sweep_doc(_dataset(http, p), p.hidden, trials, epochs)
        t = time.perf_counter()
        r = http.post("/v1/sweeps", json=doc)
        r.raise_for_status()
        done = wait_sweep(http, r.json()["id"])
        client_s = time.perf_counter() - t
    out = outcome(done, problem)
    out.notes["client_wall_s"] = client_s
    return out


def main(argv: list[str] | None = None) -> Outcome:
    return contestant_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
