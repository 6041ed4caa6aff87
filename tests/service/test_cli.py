"""The `regtrain` command line: its subcommands parse, and it refuses to serve an open port
without API keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli.main import _refuse_open_port, build_parser, settings_table
from service.settings import Settings


def test_subcommands_parse() -> None:
    parser = build_parser()
    up = parser.parse_args(["up"])
    assert (up.host, up.port, up.insecure) == ("127.0.0.1", 8000, False)
    assert parser.parse_args(["worker", "--gpu", "1"]).gpu == 1
    assert parser.parse_args(["worker", "--queues", "cpu,gpu"]).queues == ["cpu", "gpu"]
    assert parser.parse_args(["train", "s.json", "--out", "d"]).out == "d"
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--queues", "tpu"])


def test_open_port_needs_keys_or_insecure() -> None:
    open_settings = Settings(api_keys=None)
    assert _refuse_open_port("127.0.0.1", open_settings, False) is None
    assert _refuse_open_port("::1", open_settings, False) is None
    assert _refuse_open_port("localhost", open_settings, False) is None
    assert "REGTRAIN_API_KEYS" in (_refuse_open_port("0.0.0.0", open_settings, False) or "")
    assert _refuse_open_port("0.0.0.0", open_settings, True) is None
    assert _refuse_open_port("0.0.0.0", Settings(api_keys="t:k"), False) is None


def test_regtrain_api_refuses_to_listen_beyond_loopback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REGTRAIN_DATA_DIR": "/nonexistent/never-created"},
    )
    assert out.returncode == 2 and "REGTRAIN_API_KEYS" in out.stderr


def test_settings_table_lists_every_setting() -> None:
    table = settings_table()
    for name in Settings.model_fields:
        assert f"REGTRAIN_{name.upper()}" in table


def test_bad_settings_are_reported_not_raised() -> None:
    for env in ({"REGTRAIN_LEASE_SECONDS": "soon"}, {"REGTRAIN_API_KEYS": "no-colon"}):
        out = subprocess.run(
            [sys.executable, "-m", "service.cli", "api", "--port", "1"],
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "REGTRAIN_DATA_DIR": "/nonexistent/never", **env},
        )  # fmt: skip
        assert out.returncode == 2 and "bad REGTRAIN_* setting" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
