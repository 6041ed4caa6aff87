"""`regtrain logs JOB [-f]`: what the worker logged for a job, every attempt (GET
/v1/jobs/{id}/logs; with -f, its event stream's `log` events until the job ends).

It shares `client_commands`' options (--url, --json), its error handling and exit codes; the
handler is registered in its HANDLERS table. With -f the exit status is the job's, as `submit
--follow`'s: 0 when it succeeded, 1 when it failed or was cancelled. A line's message is printed
as the worker logged it, through the commands' one filter of control characters
(client_commands.run, service/cli/terminal_text.py): a log carries text from tenants' data.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any, TextIO

from regtrain_client import Client, LogLine

COMMANDS = ("logs",)

PAGE = 5000  # the server's largest page


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="what the worker logged for a job, every attempt")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="print lines as they are written, until the job ends (with --json: one JSON object a line)",
    )


def logs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.follow:
        for line in client.follow_logs(args.job_id):
            _print(line, args.json, out)
        return 0 if client.job(args.job_id).status == "succeeded" else 1
    lines = list(_all_lines(client, args.job_id))
    if args.json:
        print(
            json.dumps([line.model_dump(mode="json", exclude_none=True) for line in lines], indent=2),
            file=out,
        )
        return 0
    for line in lines:
        _print(line, False, out)
    return 0


def _all_lines(client: Client, job_id: str) -> Iterator[LogLine]:
    cursor = None
    while True:
        page = client.logs(job_id, cursor, limit=PAGE)
        yield from page.lines
        if len(page.lines) < PAGE:
            return
        cursor = page.next_cursor


def _print(line: LogLine, as_json: bool, out: TextIO) -> None:
    if as_json:  # JSON escapes every control character itself
        print(json.dumps(line.model_dump(mode="json", exclude_none=True)), file=out, flush=True)
        return
    at = line.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    print(f"{at} {line.attempt} {line.level:<7} {line.message}", file=out, flush=True)
