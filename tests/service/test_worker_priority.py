"""REGTRAIN_WORKER_NICE: a worker lowers its own CPU priority, and its session's autogroup when
it leads a session of its own (the case where nice alone weighs nothing against the API)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import os
from worker.runtime import lower_priority
lower_priority(int(os.environ["NICE"]))
group = open("/proc/self/autogroup").read().split() if os.path.exists("/proc/self/autogroup") else []
print(os.getpriority(os.PRIO_PROCESS, 0), group[-1] if group else "none")
"""
ROOT = Path(__file__).resolve().parents[2]


def _autogroup() -> str:
    """This process's autogroup nice, as the probe prints it. The file is empty for a process
    in no autogroup of its own (one whose session never left init's, as in some containers)."""
    fields = Path("/proc/self/autogroup").read_text().split()
    return fields[-1] if fields else "none"


def _run(nice: int, own_session: bool) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "NICE": str(nice)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=own_session,
    ).stdout.split()
    return int(out[0]), out[1]


def test_a_worker_leading_its_session_lowers_the_sessions_autogroup_too() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    priority, group = _run(7, own_session=True)
    assert priority == min(base + 7, 19)
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroup scheduling on this kernel")
    assert group == "7"


def test_a_worker_in_a_shared_session_leaves_the_sessions_autogroup_alone() -> None:
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no autogroup scheduling on this kernel")
    before = _autogroup()
    priority, group = _run(5, own_session=False)
    assert priority == min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)
    assert group == before == _autogroup()


def test_nice_zero_changes_nothing() -> None:
    assert _run(0, own_session=True)[0] == os.getpriority(os.PRIO_PROCESS, 0)
