"""`regtrain workers`: the server's fleet, as GET /v1/workers lists it (from the workers'
heartbeats in the store).

It shares `client_commands`' options (--url, --json), its error handling and exit codes; the
handler is registered in its HANDLERS table.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, TextIO

from regtrain_client import Client, Worker

from service.cli.tables import table

COMMANDS = ("workers",)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser(
        "workers", parents=[common], help="the server's live workers: queues, device, what each trains"
    )


def workers(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    found = client.workers()
    if args.json:
        print(json.dumps([w.model_dump(mode="json") for w in found], indent=2), file=out)
        return 0
    at = datetime.now(UTC)
    print(
        table(
            [_row(w, at) for w in found],
            ["NAME", "QUEUES", "DEVICE", "BUSY WITH", "EPOCHS/S", "SEEN", "VERSION"],
        ),
        file=out,
    )
    return 0


def _row(w: Worker, at: datetime) -> list[Any]:
    # another tenant's work shows as busy, without its id
    busy = w.busy_with or ("(another tenant's)" if w.busy else "idle")
    seen = f"{max(0.0, (at - w.last_heartbeat).total_seconds()):.0f} s ago"
    return [w.name, ",".join(w.queues), w.device or "", busy, w.epochs_per_second, seen, w.version or ""]
