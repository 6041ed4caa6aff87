"""`regtrain train SPEC --out DIR` (worker.train_cli.main): the files it writes and its exit codes."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_helpers import EXAMPLES, merge
from s3_server import S3Server

from service.data.buckets import s3_store
from service.data.datafile import parse_csv, save_canonical
from service.settings import get_settings
from worker.train_cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings that point at a temporary folder, never at the user's ~/.regtrain."""
    monkeypatch.setenv("REGTRAIN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def write_spec(folder: Path, raw: dict[str, Any] | str) -> str:
    path = folder / "spec.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return str(path)


def example_raw(name: str, **over: Any) -> dict[str, Any]:
    return merge(json.loads((EXAMPLES / f"{name}.json").read_text()), over)


def test_example_writes_result_metrics_and_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = example_raw("digits-l2", training={"epochs": 3, "device": "cpu"})
    out = tmp_path / "out"
    assert main(write_spec(tmp_path, raw), str(out)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["name"] == "digits-l2"
    assert {"test_accuracy", "test_loss"} <= set(result["result"]["metrics"])
    assert result["spec"]["regularization"]["l2"] == 0.001
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    assert {"train_loss", "data_loss", "penalty", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
        metrics["epochs"][0]
    )
    assert (out / "checkpoints" / "best.safetensors").exists()
    assert (out / "checkpoints" / "final.safetensors").exists()
    captured = capsys.readouterr()
    assert "epoch 3/3" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1]) == result["result"]["metrics"]


def test_whole_example_runs_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(str(EXAMPLES / "digits-dropout.json"), str(out)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["result"]["metrics"]["test_accuracy"] >= 0.9
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 30


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"optimizer": {"lr": 0}}, "optimizer.lr"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"regularization": {"l2": -1}}, "regularization.l2"),
        ({"model": {"type": "mlp", "hiden": [8]}}, "hiden"),
        ({"model": {"type": "cnn"}, "dataset": {"name": "iris"}}, "model.type"),
        (
            {"regularization": {"label_smoothing": 0.1}, "dataset": {"name": "diabetes"}},
            "regularization.label_smoothing",
        ),
    ],
)
def test_invalid_spec_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], over: dict[str, Any], field: str
) -> None:
    raw = example_raw("digits-none", **over)
    assert main(write_spec(tmp_path, raw), str(tmp_path / "out")) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "out" / "result.json").exists()


def test_unreadable_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(write_spec(tmp_path, "{not json"), str(tmp_path / "out")) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(str(tmp_path / "missing.json"), str(tmp_path / "out")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_failing_job_exits_1_with_a_failed_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = {
        "dataset": {"name": "diabetes"},
        "model": {"type": "mlp", "hidden": [64, 64]},
        "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9},
        "training": {"epochs": 5, "batch_size": 16, "device": "cpu"},
    }
    out = tmp_path / "out"
    assert main(write_spec(tmp_path, raw), str(out)) == 1
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and result["result"] is None
    assert result["error"]["type"] == "diverged" and "epoch" in result["error"]
    assert "diverged" in capsys.readouterr().err


def test_missing_upload_fails_as_bad_data(tmp_path: Path) -> None:
    raw = {
        "dataset": {"id": "nothing-here"},
        "model": {"type": "mlp"},
        "training": {"epochs": 1, "device": "cpu"},
    }
    out = tmp_path / "out"
    assert main(write_spec(tmp_path, raw), str(out)) == 1
    assert json.loads((out / "result.json").read_text())["error"]["type"] == "bad_data"


def test_running_again_resumes(tmp_path: Path) -> None:
    raw = example_raw("digits-none", training={"epochs": 2, "device": "cpu"})
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path, raw)
    assert main(spec_path, str(out)) == 0
    assert main(spec_path, str(out)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_from_epoch"] == 2
    assert [row["epoch"] for row in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2]


def test_uploaded_dataset_is_read_from_the_settings_data_dir(tmp_path: Path, data_dir: Path) -> None:
    rows = [f"{i % 7},{(i * 13) % 11},{(i % 7) * 2.5 + ((i * 13) % 11) * 0.3 + 0.01 * i}" for i in range(80)]
    raw_csv = ("a,b,target\n" + "\n".join(rows) + "\n").encode()
    save_canonical(
        parse_csv(raw_csv, "target", max_rows=1000, max_columns=10), data_dir / "datasets" / "reg1.npz"
    )
    spec = {
        "dataset": {"id": "reg1"},
        "model": {"type": "mlp", "hidden": [8]},
        "training": {"epochs": 2, "device": "cpu"},
    }
    out = tmp_path / "out"
    assert main(write_spec(tmp_path, spec), str(out)) == 0
    metrics = json.loads((out / "result.json").read_text())["result"]["metrics"]
    assert {"test_mse", "test_mae", "test_r2"} <= set(metrics)


def test_a_dataset_by_s3_uri_is_fetched_and_recorded(tmp_path: Path, s3: S3Server) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 3)).astype(np.float32)
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "y": (X[:, 0] > 0).astype(np.int64)}), buf
    )
    bucket = s3.bucket()
    obstore.put(s3_store(f"s3://{bucket}"), "t.parquet", buf.getvalue())
    spec = {
        "dataset": {"uri": f"s3://{bucket}/t.parquet", "target": "y"},
        "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 1, "device": "cpu"},
    }
    out = tmp_path / "out"
    assert main(write_spec(tmp_path, spec), str(out)) == 0
    found = json.loads((out / "result.json").read_text())["result"]["environment"]["dataset"]
    assert found["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()

    spec["dataset"] = {"uri": f"s3://{bucket}/missing.parquet"}
    assert main(write_spec(tmp_path, spec), str(out)) == 1
    error = json.loads((out / "result.json").read_text())["error"]
    assert error["type"] == "bad_data" and error["message"] == "dataset.uri: no such object in the bucket"
