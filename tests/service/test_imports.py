"""Importing regtrain's modules has no side effect on the file system: the embedded broker's
folders appear when a connection opens, not when the Celery app is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_importing_every_entry_point_writes_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    env["HOME"] = str(tmp_path)
    code = "import worker.celery_app, worker.tasks, worker.sweep_task, service.api.app, service.cli"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []
