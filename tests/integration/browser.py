"""Headless Chromium (Debian's, installed by .ci/run) for the page tests, with no network:
every host but loopback resolves to nothing and every proxied request goes to a closed port,
so a page that needs a CDN shows it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)

OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]  # fmt: skip


def browse(url: str, tmp_path: Path, shot: Path | None = None, *, budget_ms: int = 8000,
           size: str = "1280,900") -> str:  # fmt: skip
    """Load `url` offline, give its scripts `budget_ms` of virtual time, and return the DOM they
    left (or save a screenshot of `size` at `shot`)."""
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", *OFFLINE,
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", f"--window-size={size}",
         f"--virtual-time-budget={budget_ms}", *([f"--screenshot={shot}"] if shot else ["--dump-dom"]), url],
        check=True, capture_output=True, timeout=120, text=True,
    )  # fmt: skip
    return out.stdout
