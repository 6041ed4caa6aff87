"""The `regtrain` commands that talk to a running server, through regtrain_client.

    regtrain submit SPEC.json [--follow]      regtrain metrics ID [--csv]
    regtrain status ID                        regtrain cancel ID
    regtrain jobs [--status S] [--limit N]    regtrain download ID [--checkpoint best] [-o FILE]
    regtrain sweep SWEEP.json [--follow]
    (and, in resource_commands: sweeps, datasets, upload, predict, delete; in fleet_commands: workers;
    in log_commands: logs)

`status ID` shows a job, or a sweep when no job has that id.

The server comes from --url or REGTRAIN_URL (default http://127.0.0.1:8000), the key from
REGTRAIN_API_KEY. Exit status: 0 done (a followed job succeeded), 1 the job or sweep failed or
was cancelled, or the server refused the request, 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

import httpx
from regtrain_client import (
    ApiError,
    Client,
    Job,
    NotFound,
    Sweep,
    epoch_line,
    format_detail,
    trial_event_line,
)

from service.cli import fleet_commands, log_commands, resource_commands
from service.cli.tables import fmt as _fmt
from service.cli.tables import table
from service.cli.terminal_text import Printable

# A server that has not answered yet is tried again (after 0.5, 1 s) for at most GIVE_UP_AFTER_S, so
# that a wrong URL is reported within about 2 s (a connect attempt waits CONNECT_S); once it has
# answered, a dropped connection (a restart while following a job) gets every retry.
RETRIES = 4
GIVE_UP_AFTER_S = 2.0
CONNECT_S = 1.5
COMMANDS = (
    "submit",
    "status",
    "jobs",
    "metrics",
    "cancel",
    "download",
    "sweep",
    *resource_commands.COMMANDS,
    *fleet_commands.COMMANDS,
    *log_commands.COMMANDS,
)


def add_commands(sub: Any) -> None:
    """Add the client commands to the `regtrain` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the regtrain server (default: $REGTRAIN_URL, else http://127.0.0.1:8000)"
    )
    common.add_argument("--json", action="store_true", help="print the server's JSON document")

    p = sub.add_parser("submit", parents=[common], help="queue a job on a server")
    p.add_argument("spec", metavar="SPEC.json", help='a JobSpec file ("-": standard input)')
    p.add_argument("--follow", "-f", action="store_true", help="a line per epoch, then the result")
    p = sub.add_parser("status", parents=[common], help="a job's or a sweep's status, progress and result")
    p.add_argument("job_id", metavar="ID")
    p = sub.add_parser("jobs", parents=[common], help="the newest jobs")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("metrics", parents=[common], help="a job's metrics, one row per epoch")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--csv", action="store_true", help="CSV with a header row")
    p = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    p.add_argument("job_id", metavar="ID")
    p = sub.add_parser("download", parents=[common], help="save a checkpoint as safetensors")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--checkpoint", default="best", help='"best" (default), "final" or "epoch-K"')
    p.add_argument("-o", "--output", metavar="FILE", help="default: ID-CHECKPOINT.safetensors")
    p = sub.add_parser("sweep", parents=[common], help="queue a sweep (grid or random search)")
    p.add_argument("spec", metavar="SWEEP.json", help='a sweep file ("-": standard input)')
    p.add_argument("--follow", "-f", action="store_true", help="follow it to the end, then the trials")
    resource_commands.add_commands(sub, common)
    fleet_commands.add_commands(sub, common)
    log_commands.add_commands(sub, common)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    # Whatever a command writes, on either stream, reaches the terminal through one filter: the
    # server's text never as control characters (see terminal_text; --json is untouched).
    stdout, stderr = Printable(sys.stdout), Printable(sys.stderr)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        return _run(args, Printable(out) if out is not None else stdout)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    handler: Callable[[Client, argparse.Namespace, TextIO], int] = HANDLERS[args.command]
    try:
        client = Client(args.url, retries=RETRIES, give_up_after_s=GIVE_UP_AFTER_S,
                        timeout=httpx.Timeout(30, connect=CONNECT_S))  # fmt: skip
        with client:
            return handler(client, args, out)
    except ApiError as e:
        print(f"regtrain: the server refused ({e.status_code}): {format_detail(e.detail)}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:
        url = args.url or Client.default_url()
        print(f"regtrain: cannot reach the server at {url}: {e or type(e).__name__} "
              "(set --url or REGTRAIN_URL)", file=sys.stderr)  # fmt: skip
        return 1
    except BrokenPipeError:
        raise  # standard output closed early: service.cli.pipes ends quietly
    except (OSError, ValueError) as e:
        print(f"regtrain: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Following is only watching: the job or sweep goes on on the server.
        print("\nregtrain: stopped following; it goes on (`regtrain status ID`)", file=sys.stderr)
        return 130


# --- rendering -----------------------------------------------------------------------------


def job_summary(job: Job) -> str:
    lines = [f"job {job.id}" + (f" ({job.name})" if job.name else "") + f": {job.status}"]
    p = job.progress
    lines.append(f"progress: epoch {p.epoch}/{p.epochs} ({p.fraction:.0%})")
    if job.duration_s is not None:
        lines.append(f"time: {job.duration_s:.1f} s, {job.attempts} attempt(s)")
    if job.error is not None:
        lines.append(f"error: {job.error.type}: {job.error.message}")
    if job.latest_metrics and not job.result:
        lines.append(
            "latest: " + ", ".join(f"{k} {_fmt(v)}" for k, v in job.latest_metrics.items() if v is not None)
        )
    if job.result is not None:
        r = job.result
        # the scalars: a classification's per-class report is too wide for this table
        rows: list[tuple[str, Any]] = [(k, v) for k, v in r.metrics.items() if not isinstance(v, dict | list)]
        rows += [("best_epoch", r.best_epoch), ("weight_l2_norm", r.weight_l2_norm),
                 ("weight_sparsity", r.weight_sparsity)]  # fmt: skip
        lines += ["", table([row for row in rows if row[1] is not None], ["result", "value"])]
    return "\n".join(lines)


def _print_json(doc: Any, out: TextIO) -> None:
    print(json.dumps(doc, indent=2, default=str), file=out)


def _dump(model: Job | Sweep) -> dict[str, Any]:
    return model.model_dump(mode="json")


# --- commands ------------------------------------------------------------------------------


def submit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    job = client.submit(args.spec)
    if not args.follow:
        if args.json:
            _print_json(_dump(job), out)
        else:
            print(job.id, file=out)
        return 0
    print(f"job {job.id} {job.status}", file=sys.stderr, flush=True)
    epochs = job.progress.epochs

    def show(row: Any, _: Job) -> None:
        print(epoch_line(row, epochs), file=sys.stderr, flush=True)

    job = client.wait(job.id, progress=show)
    if args.json:
        _print_json(_dump(job), out)
    else:
        print(job_summary(job), file=out)
    return 0 if job.status == "succeeded" else 1


def status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    # Job and sweep ids share one form: an id that names no job is looked up as a sweep.
    try:
        doc: Job | Sweep = client.job(args.job_id)
    except NotFound:
        try:
            doc = client.sweep(args.job_id)
        except NotFound:
            raise NotFound(404, f"no job or sweep {args.job_id!r}") from None
    if args.json:
        _print_json(_dump(doc), out)
    else:
        print(job_summary(doc) if isinstance(doc, Job) else sweep_summary(doc), file=out)
    return 0


def jobs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    found = client.jobs(status=args.status, limit=args.limit)
    if args.json:
        _print_json([_dump(j) for j in found], out)
        return 0
    rows = []
    for j in found:
        metric = None
        if j.result is not None:
            metrics = j.result.metrics
            name = next((k for k in ("test_accuracy", "test_r2", "test_mse") if k in metrics), None)
            metric = (name, metrics[name]) if name else next(iter(metrics.items()), None)
        rows.append((j.id, j.name or "", j.status, f"{j.progress.epoch}/{j.progress.epochs}",
                     j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                     f"{metric[0]} {_fmt(metric[1])}" if metric and metric[1] is not None else ""))  # fmt: skip
    print(table(rows, ["ID", "NAME", "STATUS", "EPOCH", "CREATED", "RESULT"]), file=out)
    return 0


def metrics(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    rows = [r.model_dump() for r in client.metrics(args.job_id)]
    if args.json:
        _print_json(rows, out)
        return 0
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns and r[k] is not None]
    if args.csv:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(table([[r.get(c) for c in columns] for r in rows], columns), file=out)
    return 0


def cancel(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    job = client.cancel(args.job_id)
    if args.json:
        _print_json(_dump(job), out)
    else:
        said = "cancelled" if job.status == "cancelled" else "cancel requested (stops within a few seconds)"
        print(f"job {job.id}: {said}", file=out)
    return 0


def download(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    path = client.download(args.job_id, args.checkpoint, args.output)
    print(path, file=out)
    return 0


ENDED = frozenset({"succeeded", "failed", "cancelled", "pruned"})


def sweep(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    sw = client.submit_sweep(args.spec)
    if not args.follow:
        if args.json:
            _print_json(_dump(sw), out)
        else:
            print(sw.id, file=out)
        return 0
    # Plain lines, never a tqdm bar (stderr is often a log file): from the sweep's events, each
    # trial as it starts, ends an epoch, is pruned or ends. The sweep ends once its best trial's
    # retrain job has, so that job's test metrics are there to show.
    total = int(sw.spec.get("trials", 0)) if sw.spec.get("space") else len(sw.trials)
    ended: set[int] = set()
    for event in sw.events():
        if event.event == "trial":
            print(trial_event_line(event.data), file=sys.stderr, flush=True)
            if event.data.get("status") in ENDED and event.data.get("event") != "started":
                ended.add(int(event.data["index"]))
                print(f"sweep {sw.id}: {len(ended)}/{total} trials finished", file=sys.stderr, flush=True)
        elif event.event == "status":
            print(f"sweep {sw.id}: {event.data.get('status')}", file=sys.stderr, flush=True)
    sw = sw.refresh()
    best = client.job(sw.best.job_id) if sw.best is not None and sw.best.job_id else None
    if args.json:
        _print_json({**_dump(sw), "best_job": _dump(best) if best else None}, out)
    else:
        print(sweep_summary(sw), file=out)
        if best is not None:
            print("\n" + job_summary(best), file=out)
    ok = sw.status == "succeeded" and (best is None or best.status == "succeeded")
    return 0 if ok else 1


def sweep_summary(sw: Sweep) -> str:
    """The trials (their params, status and the objective's fold mean ± std), then the best."""
    lines = [f"sweep {sw.id}" + (f" ({sw.name})" if sw.name else "") + f": {sw.status}"]
    if sw.error is not None:
        lines.append(f"error: {sw.error.type}: {sw.error.message}")
    names = sorted({k for t in sw.trials for k in t.params})
    metric = str(sw.objective.get("metric", "score"))
    rows = []
    for t in sw.trials:
        m = t.metrics or {}
        rows.append(
            [
                *(t.params.get(k) for k in names),
                t.status,
                m.get(metric, t.score),
                m.get(f"{metric}_std"),
                t.epochs_trained,
            ]
        )
    if rows:
        lines += ["", table(rows, [*names, "status", metric, "std", "epochs"])]
    if sw.best is not None:
        params = ", ".join(f"{k}={v}" for k, v in sw.best.params.items())
        lines += ["", f"best ({sw.objective.get('mode', '')} {metric}): {params}"]
        if sw.best.job_id:
            lines.append(f"retrained on train + validation as job {sw.best.job_id}")
        if sw.best.test_metrics:
            lines.append(
                "test: " + ", ".join(f"{k} {v:.4f}" for k, v in sw.best.test_metrics.items() if v is not None)
            )
    lines += [f"warning: {w}" for w in sw.warnings]
    return "\n".join(lines)


HANDLERS: dict[str, Callable[[Client, argparse.Namespace, TextIO], int]] = {
    "submit": submit,
    "status": status,
    "jobs": jobs,
    "metrics": metrics,
    "cancel": cancel,
    "download": download,
    "sweep": sweep,
    "sweeps": resource_commands.sweeps,
    "datasets": resource_commands.datasets,
    "upload": resource_commands.upload,
    "predict": resource_commands.predict,
    "delete": resource_commands.delete,
    "workers": fleet_commands.workers,
    "logs": log_commands.logs,
}
