"""The API process stays light: it never imports torch (nor the worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from fastapi.testclient import TestClient
from service.api.app import create_app
from service.cli.main import build_parser
from service.settings import Settings

client = TestClient(create_app(Settings(data_dir=sys.argv[1])))
spec = {"dataset": {"name": "digits"}, "model": {"type": "cnn"}, "training": {"epochs": 1}}
codes = [client.post("/v1/jobs:validate", json=spec).status_code,
         client.post("/v1/jobs", json=spec).status_code,
         client.get("/v1/datasets").status_code,
         client.get("/readyz").status_code]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "sklearn", "worker"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_the_api_never_imports_torch(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["codes"] == [200, 202, 200, 200]
    assert report["heavy"] == []
