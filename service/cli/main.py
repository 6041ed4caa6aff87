"""The `regtrain` command line: the one place that sees both the API and the worker.

The worker's modules are imported inside the commands that need them (`worker`, `up`, `train`),
so `regtrain api` never loads torch.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service.api.auth import parse_api_keys
from service.cli import client_commands
from service.cli.pipes import quiet_when_piped
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    from service.queue.broker import QueueKind

QUEUE_KINDS: tuple[QueueKind, ...] = ("cpu", "gpu")
# A job's event stream lasts as long as the job: on shutdown, requests in flight get this long,
# then open streams are cut (clients resume elsewhere with Last-Event-ID).
WORKER_RESTARTS = 3  # quick deaths in a row before `regtrain up` gives up
GRACEFUL_SHUTDOWN_S = 5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regtrain", description="Train regularized PyTorch models over HTTP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def serving(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument(
            "--insecure",
            action="store_true",
            help="listen beyond loopback without REGTRAIN_API_KEYS (anyone who can reach the "
            "port can train and read every job)",
        )

    up = sub.add_parser("up", help="the API and one worker on this machine (embedded default)")
    serving(up)
    api = sub.add_parser("api", help="the HTTP API alone (one process of a fleet)")
    serving(api)
    worker = sub.add_parser("worker", help="one Celery worker process (one per GPU)")
    worker.add_argument(
        "--gpu", type=int, metavar="N", help="train on GPU N only (sets CUDA_VISIBLE_DEVICES)"
    )
    worker.add_argument(
        "--queues",
        type=_queue_list,
        help="comma-separated queues to take jobs from: cpu, gpu (default: gpu with --gpu, else cpu)",
    )
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    train = sub.add_parser("train", help="run one job in-process, with no service")
    train.add_argument("spec", metavar="SPEC.json")
    train.add_argument("--out", required=True, metavar="DIR")
    sub.add_parser("settings", help="print every REGTRAIN_* setting as a Markdown table")
    client_commands.add_commands(sub)
    return parser


def _queue_list(raw: str) -> list[QueueKind]:
    named = [k.strip() for k in raw.split(",") if k.strip()]
    kinds: list[QueueKind] = [k for k in QUEUE_KINDS if k in named]
    bad = [k for k in named if k not in QUEUE_KINDS]
    if bad or not named:
        raise argparse.ArgumentTypeError(f"queues are {', '.join(QUEUE_KINDS)}; got {raw!r}")
    return sorted(kinds, key=named.index)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C anywhere else: quiet, with the shell's status for it
        return 130
    except Terminated:
        return 143


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in client_commands.COMMANDS:
        return quiet_when_piped(lambda: client_commands.run(args))
    if args.command == "train":
        from worker.train_cli import main as train_main

        return train_main(args.spec, args.out)
    if args.command == "settings":
        return quiet_when_piped(print_settings)
    try:
        settings = get_settings()
        parse_api_keys(settings.api_keys)
    except (ValidationError, ValueError) as e:
        print(f"regtrain: bad REGTRAIN_* setting: {e}", file=sys.stderr)
        return 2
    if args.command == "worker":
        return run_worker(settings, gpu=args.gpu, kinds=args.queues, loglevel=args.loglevel)
    refusal = _refuse_open_port(args.host, settings, args.insecure)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if args.command == "api":
        return run_api(settings, args.host, args.port)
    return run_up(settings, args.host, args.port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_open_port(host: str, settings: Settings, insecure: bool) -> str | None:
    if _is_loopback(host) or settings.api_keys or insecure:
        return None
    return (
        f"refusing to listen on {host} without API keys: set REGTRAIN_API_KEYS="
        '"tenant:key,..." (clients then send Authorization: Bearer <key>), '
        "or pass --insecure to serve everyone who can reach the port"
    )


class Terminated(Exception):
    """SIGTERM (systemd, a supervisor, kill), raised like Ctrl-C's KeyboardInterrupt so that the
    same `finally` stops what this process started."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def listen(host: str, port: int) -> socket.socket | None:
    """The API's listening socket, bound before anything starts (the store, a worker), so a port
    in use is one line and exit 1 instead of a worker started for an API that never serves."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        print(f"regtrain: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # listen() now: with SO_REUSEADDR, Linux lets two sockets bind one port until one listens.
        sock.listen(2048)
    except OSError as e:
        sock.close()
        print(f"regtrain: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return None
    return sock


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, and regtrain.access beside it: the same prefix, a plain formatter."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["regtrain_access"] = {"format": "INFO:     %(message)s"}
    config["handlers"]["regtrain_access"] = {
        "formatter": "regtrain_access",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["regtrain.access"] = {
        "handlers": ["regtrain_access"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def _server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        # The API writes its own access lines, with each request's latency (service.api.telemetry).
        access_log=False,
        log_config=_log_config(),
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return uvicorn.Server(config)


def run_api(settings: Settings, host: str, port: int) -> int:
    from service.api.app import create_app

    sock = listen(host, port)
    if sock is None:
        return 1
    app = create_app(settings)  # migrates the store before the port serves
    # uvicorn re-raises the signal it handled once it has stopped: Ctrl-C as KeyboardInterrupt,
    # SIGTERM as Terminated (our handler, which uvicorn restores first).
    signal.signal(signal.SIGTERM, _raise_terminated)
    with contextlib.suppress(KeyboardInterrupt, Terminated):
        _server(app, host, port).run(sockets=[sock])
    return 0


def run_worker(settings: Settings, *, gpu: int | None, kinds: list[QueueKind] | None, loglevel: str) -> int:
    if gpu is not None:
        # Before anything imports torch: this process then sees GPU N alone, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from service.queue.broker import celery_events, queue_name
    from worker.celery_app import app
    from worker.runtime import lower_priority, open_store_or_exit

    open_store_or_exit()  # before Celery starts: a store that fails is one line and exit 1
    lower_priority(settings.worker_nice)

    chosen: list[QueueKind] = kinds or (["gpu"] if gpu is not None else ["cpu"])
    queues = ",".join(queue_name(settings, k) for k in chosen)
    label = f"gpu{gpu}" if gpu is not None else "cpu"
    app.worker_main(
        [
            "worker",
            # solo: the task runs in this very process, so CUDA is never initialised in a parent
            # that then forks, and one process trains one job at a time (one per GPU).
            "--pool=solo",
            "--concurrency=1",
            f"--queues={queues}",
            f"--hostname=regtrain-{label}-{os.getpid()}@%h",
            # No mingle or gossip: cancel and liveness go through the store. Event heartbeats
            # only where events are on (REGTRAIN_CELERY_EVENTS), for Flower's online/offline.
            "--without-mingle",
            "--without-gossip",
            *([] if celery_events(settings) else ["--without-heartbeat"]),
            f"--loglevel={loglevel.upper()}",
        ]
    )
    return 0


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A worker's preexec_fn: SIGTERM it (a warm shutdown that re-queues its job) when `up`
    dies, even by SIGKILL, which no `finally` of ours would see (Linux' PR_SET_PDEATHSIG)."""

    # libc is loaded here, in the parent: after fork, only async-signal-safe work is safe (a
    # dlopen could hang on a lock another thread held at the fork).
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # `up` died before the line above took effect
            os._exit(1)

    return preexec


def run_up(settings: Settings, host: str, port: int) -> int:
    from service.api.app import create_app

    sock = listen(host, port)
    if sock is None:
        return 1
    signal.signal(signal.SIGTERM, _raise_terminated)
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"regtrain: API on http://{shown}:{port}  (docs: http://{shown}:{port}/docs)", flush=True)
    print(f"regtrain: data in {settings.data_dir}; Ctrl-C stops the API and the worker", flush=True)
    parent = os.getpid()

    # Its own session: Ctrl-C reaches this process only, which then stops the worker with one
    # SIGTERM (a warm shutdown that re-queues a running job) instead of a double signal.
    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--queues", "cpu,gpu"],
            start_new_session=True,
            preexec_fn=_die_with_parent(parent),
        )

    workers = [start_worker()]
    server = _server(app, host, port)

    def supervise_worker() -> None:
        # A worker that dies is started again (its job, if any, resumes once its lease lapses);
        # one that keeps dying within seconds stops the service rather than loop for ever.
        quick_deaths = 0
        while True:
            started = time.monotonic()
            workers[-1].wait()
            if server.should_exit:
                return
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < 30 else 0
            code = workers[-1].returncode
            if quick_deaths >= WORKER_RESTARTS:
                print(f"regtrain: the worker keeps exiting ({code}); stopping", file=sys.stderr)
                server.should_exit = True
                return
            print(f"regtrain: the worker exited ({code}); starting another", file=sys.stderr)
            time.sleep(1)
            workers.append(start_worker())

    threading.Thread(target=supervise_worker, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, Terminated):  # re-raised by uvicorn once it has stopped
        pass
    finally:
        server.should_exit = True
        _stop(workers[-1])
    print("regtrain: stopped", flush=True)
    return 0


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """A warm shutdown (the running job goes back to the queue), a kill if it hangs."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    while True:
        try:
            worker.wait(timeout=60)
            return
        except subprocess.TimeoutExpired:
            worker.kill()
        except (KeyboardInterrupt, Terminated):
            continue  # a second Ctrl-C or SIGTERM while it stops: keep waiting, then kill


def print_settings() -> int:
    print(settings_table())
    return 0


def settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "(unset)" if default is None else f"`{default}`" if default != "" else "(empty)"
        if name == "data_dir":
            shown = "`~/.regtrain`"
        rows.append(f"| `REGTRAIN_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
