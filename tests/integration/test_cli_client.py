"""The client commands of `regtrain` (submit, status, jobs, metrics, cancel, download) against the
live server of tests/integration. One backend suffices: the commands only speak HTTP."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from live_service import Service

from service.cli import client_commands, main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("service", ["embedded"], indirect=True),
]

SPEC = {
    "name": "cli",
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 3},
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return path


def test_submit_follow_then_inspect(
    service: Service, spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("REGTRAIN_URL", service.url)
    assert main(["submit", str(spec_file), "--follow"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "train_loss" in lines[0] and "val_accuracy" in lines[0] and "[" in lines[0]
    assert "succeeded" in out and "test_accuracy" in out
    job_id = err.split()[1]

    assert main(["status", job_id]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job_id
    assert main(["jobs", "--limit", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATUS"] and any(job_id in row for row in table)

    assert main(["metrics", job_id, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and float(rows[0]["train_loss"]) > 0
    assert main(["metrics", job_id]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[0] == "epoch"

    target = tmp_path / "w.safetensors"
    assert main(["download", job_id, "--checkpoint", "final", "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target) and target.with_suffix(".json").is_file()
    sha = {
        c["name"]: c["sha256"]
        for c in service.http.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    }
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha["final"]

    # A finished job cannot be cancelled: the server's detail, and exit status 1.
    assert main(["cancel", job_id, "--url", service.url]) == 1
    assert "409" in capsys.readouterr().err


def test_failures_exit_non_zero(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGTRAIN_URL", service.url)
    monkeypatch.setattr(client_commands, "RETRIES", 1)
    diverges = tmp_path / "diverges.json"
    diverges.write_text(json.dumps({"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [64]},
                                    "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9},
                                    "training": {"epochs": 3}}))  # fmt: skip
    assert main(["submit", str(diverges), "--follow"]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "diverged" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SPEC, "training": {"epochs": 0}}))
    assert main(["submit", str(bad)]) == 1
    assert "body.training.epochs" in capsys.readouterr().err
    assert main(["status", "no-such-job"]) == 1
    assert "404" in capsys.readouterr().err
    assert main(["submit", str(tmp_path / "missing.json")]) == 2
    assert main(["jobs", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    # A queued-or-running job is cancelled by the command.
    long = tmp_path / "long.json"
    long.write_text(json.dumps({**SPEC, "training": {"epochs": 5000}}))
    assert main(["submit", str(long)]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["cancel", job_id]) == 0
    assert job_id in capsys.readouterr().out
    assert service.wait(job_id, timeout=30)["status"] == "cancelled"


def test_sweep_follow(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGTRAIN_URL", service.url)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({
        "base": {**SPEC, "training": {"epochs": 2}},
        "grid": {"regularization.l2": [0.0, 0.001]},
        "objective": {"metric": "val_accuracy", "mode": "max"},
    }))  # fmt: skip
    assert main(["sweep", str(sweep), "--follow"]) == 0
    out, err = capsys.readouterr()
    assert "trials finished" in err
    assert "regularization.l2" in out and "best (max val_accuracy): regularization.l2=" in out


def test_output_into_a_closed_pipe_ends_quietly(service: Service) -> None:
    """`regtrain metrics ID | head`: the reader gone, the command ends with 141 and no traceback."""
    import os
    import subprocess
    import sys

    job_id = service.wait(service.submit({**SPEC, "name": "piped"})["id"])["id"]
    for args in (["metrics", job_id], ["metrics", job_id, "--csv"], ["jobs"], ["status", job_id]):
        read, write = os.pipe()
        os.close(read)
        try:
            out = subprocess.run([sys.executable, "-m", "service.cli", *args, "--url", service.url],
                                 stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)  # fmt: skip
        finally:
            os.close(write)
        assert (out.returncode, out.stderr) == (141, ""), args
    head = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"{sys.executable} -m service.cli metrics {job_id} --url {service.url} | head -2"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert head.stdout.split()[0] == "epoch" and head.returncode in (0, 141) and head.stderr == ""
