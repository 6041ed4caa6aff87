"""The `regtrain` commands beyond jobs (sweeps, status of a sweep, datasets, upload, predict,
delete) against the live server of tests/integration, as a user at a shell runs them. One
backend suffices: the commands only speak HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from live_service import Service

from service.cli import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("service", ["embedded"], indirect=True),
]

# Two separable blobs: a model that learned anything predicts the rows' own classes.
ROWS = [(x, x * 0.5, "low" if x < 5 else "high") for x in [i * 0.25 for i in range(40)]]


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "blobs.csv"
    path.write_text("a,b,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in ROWS))
    return path


def test_upload_train_predict_delete_by_the_command_line(
    service: Service, csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("REGTRAIN_URL", service.url)
    assert main(["upload", str(csv_file), "--target", "label"]) == 0
    dataset_id = capsys.readouterr().out.strip()
    assert dataset_id.startswith("ds-")

    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["ID", "NAME", "TASK"]
    assert any(line.startswith(dataset_id) and "blobs.csv" in line for line in listing)
    assert any(line.startswith("(built-in)") and " iris " in line for line in listing)
    assert main(["datasets", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert next(d for d in docs if d["id"] == dataset_id)["n_samples"] == len(ROWS)

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dataset": {"id": dataset_id}, "model": {"type": "mlp", "hidden": [8]},
                                "training": {"epochs": 30, "seed": 0}}))  # fmt: skip
    assert main(["submit", str(spec), "--follow"]) == 0
    job_id = capsys.readouterr().err.split()[1]

    # predict from a CSV with a header (the target column left out), from JSON and from NPZ
    features = tmp_path / "rows.csv"
    features.write_text("a,b\n0.0,0.0\n9.5,4.75\n")
    assert main(["predict", job_id, str(features)]) == 0
    assert capsys.readouterr().out.split() == ["low", "high"]
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps({"inputs": [[0.25, 0.125]]}))
    assert main(["predict", job_id, str(as_json), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["low"]
    as_npz = tmp_path / "rows.npz"
    np.savez(as_npz, X=np.array([[9.0, 4.5]], np.float32))
    assert main(["predict", job_id, str(as_npz)]) == 0
    assert capsys.readouterr().out.split() == ["high"]

    # in use by nothing queued now: the dataset goes, then the job
    assert main(["delete", dataset_id]) == 0
    assert capsys.readouterr().out.strip() == f"dataset {dataset_id}: deleted"
    assert main(["delete", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": job_id, "deleted": "job"}
    assert main(["delete", job_id]) == 1
    assert "404" in capsys.readouterr().err


def test_sweeps_list_and_status_of_a_sweep(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGTRAIN_URL", service.url)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({
        "name": "cli-sweep",
        "base": {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [8]}, "training": {"epochs": 2}},
        "grid": {"regularization.l2": [0.0, 0.001]},
    }))  # fmt: skip
    assert main(["sweep", str(sweep), "--follow"]) == 0
    capsys.readouterr()
    sweep_id = service.http.get("/v1/sweeps", params={"limit": 1}).json()["sweeps"][0]["id"]

    assert main(["sweeps", "--limit", "5"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:4] == ["ID", "NAME", "STATUS", "TRIALS"]
    row = next(line for line in listing if line.startswith(sweep_id))
    assert "cli-sweep" in row and "succeeded" in row and "2/2" in row
    assert main(["sweeps", "--json", "--status", "succeeded"]) == 0
    assert sweep_id in {s["id"] for s in json.loads(capsys.readouterr().out)}

    # `status` takes a sweep's id as well as a job's
    assert main(["status", sweep_id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep {sweep_id} (cli-sweep): succeeded") and "best" in out
    assert main(["status", sweep_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == sweep_id
    assert main(["status", "no-such-id"]) == 1
    assert "no job or sweep" in capsys.readouterr().err
    # a sweep is not deleted by `delete`: a clear refusal, exit status 2
    assert main(["delete", sweep_id]) == 2
    assert "is a sweep" in capsys.readouterr().err
