"""The `regtrain` client commands, run as processes against the live server of tests/integration,
print no control character that the server sent: a job, sweep or dataset named with terminal
escapes (the API keeps names as given) is shown escaped in human output, and `--json` stays
valid JSON holding the name exactly. One backend suffices: the commands only speak HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from live_service import Service

from service.cli.terminal_text import UNSAFE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("service", ["embedded"], indirect=True),
]

# Sets the window's title, clears the screen, reverses what follows, and a C1 CSI (red).
HOSTILE = "\u001b]0;PWNED\u0007\u001b[2J\u202eevil\u009b31m"
SPEC = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}


def regtrain(service: Service, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """The command as a user runs it; its raw bytes on both streams."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv, "--url", service.url],
        capture_output=True,
        timeout=120,
        env={k: v for k, v in service.env.items() if k != "REGTRAIN_API_KEY"},
    )


def inert(raw: bytes) -> str:
    """The output as text, once it is known to hold nothing a terminal would act on."""
    text = raw.decode()
    assert b"\x1b" not in raw and b"\x07" not in raw and UNSAFE.search(text) is None, text
    return text


def test_names_with_terminal_escapes_are_printed_escaped(service: Service, tmp_path: Path) -> None:
    job = service.submit({**SPEC, "name": HOSTILE})
    assert job["name"] == HOSTILE  # the API keeps it: the CLI is what makes it inert
    service.wait(job["id"])
    sweep = service.http.post("/v1/sweeps", json={"name": HOSTILE, "base": SPEC,
                                                  "grid": {"regularization.l2": [0.0]}})  # fmt: skip
    assert sweep.status_code == 202, sweep.text
    csv = b"a,b,y\n" + b"".join(f"{i},{i % 3},{i % 2}\n".encode() for i in range(20))
    dataset = service.http.post("/v1/datasets", files={"file": (f"{HOSTILE}.csv", csv)}, data={"target": "y"})
    assert dataset.status_code == 201, dataset.text
    named = dataset.json()["name"]  # the file's name (httpx sends the BEL as %07, the rest raw)
    assert named.startswith("\x1b]0;PWNED") and "\u202e" in named

    shown = "\\x1b]0;PWNED\\x07\\x1b[2J\\u202eevil\\x9b31m"
    for argv, expected in [
        (["jobs"], shown),
        (["status", job["id"]], shown),
        (["sweeps"], shown),
        (["datasets"], "\\x1b]0;PWNED%07\\x1b[2J\\u202eevil\\x9b31m.csv"),
    ]:
        proc = regtrain(service, *argv)
        assert proc.returncode == 0, proc.stderr
        assert expected in inert(proc.stdout), argv
        inert(proc.stderr)

    # --json: valid JSON, every control character a \u escape, the name exactly as stored
    proc = regtrain(service, "jobs", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "\\u001b]0;PWNED\\u0007" in inert(proc.stdout)
    assert HOSTILE in [j["name"] for j in json.loads(proc.stdout)]

    # The server's error detail (a 422 naming the field the user sent) on standard error
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, HOSTILE: 1}))
    proc = regtrain(service, "submit", str(spec))
    assert proc.returncode == 1
    assert "422" in inert(proc.stderr)
    inert(proc.stdout)
