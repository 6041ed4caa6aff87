"""What a data scientist reads and takes away, on both backends: a classification job's test
report (per class precision, recall, F1 and support, macro F1, the confusion matrix) and the best
checkpoint's test metrics; and the TorchScript and ONNX exports, downloaded over HTTP, fed as
numpy and pandas give data (float64, int64), answering what `/predict` answers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from live_service import Service

from service.contract.spec import JobSpec

pytestmark = pytest.mark.integration

DIGITS = {
    "name": "report-digits",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [32]},
    # the best checkpoint is kept, not restored: best_checkpoint_metrics is its own measurement
    "training": {"epochs": 6, "early_stopping": {"patience": 20, "restore_best": False}},
}
DIABETES = {"name": "report-diabetes", "dataset": {"name": "diabetes"}, "model": {"type": "mlp", "hidden": [16]},
            "training": {"epochs": 3}}  # fmt: skip


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def test_a_digits_result_has_its_class_report_and_the_best_checkpoints(service: Service) -> None:
    from worker.training.data import prepare

    job = service.wait(service.submit(DIGITS)["id"], timeout=180)
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    n_test = len(prepare(JobSpec.model_validate(job["spec"])).X_test)
    assert result["classes"] == list(range(10))
    for metrics in (result["metrics"], result["best_checkpoint_metrics"]):
        assert set(metrics["per_class"]) == {str(k) for k in range(10)}
        matrix = np.array(metrics["confusion_matrix"])
        assert matrix.shape == (10, 10) and matrix.sum() == n_test
        assert [metrics["per_class"][str(k)]["support"] for k in range(10)] == matrix.sum(1).tolist()
        assert np.trace(matrix) / n_test == pytest.approx(metrics["test_accuracy"])
        f1 = [metrics["per_class"][str(k)]["f1"] for k in range(10)]
        assert metrics["macro_f1"] == pytest.approx(np.mean(f1)) and 0 < metrics["macro_f1"] <= 1
    # the sweep documents' test_metrics and the CLI read the scalars; the job keeps it all
    best = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best/sidecar").json()
    assert best["epoch"] == result["best_epoch"]


@pytest.mark.parametrize("spec", [DIGITS, DIABETES], ids=["digits", "diabetes"])
def test_exports_over_http_take_float64_and_int64_and_answer_what_predict_answers(
    service: Service, spec: dict[str, object]
) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    job = service.wait(service.submit(spec)["id"], timeout=180)
    assert job["status"] == "succeeded", job["error"]
    url = f"/v1/jobs/{job['id']}/checkpoints/best"
    n_features = 64 if spec is DIGITS else 10
    rng = np.random.default_rng(0)
    # what numpy and pandas give: float64 (pixels in [0, 16]; diabetes' features near 0), int64
    floats = rng.uniform(0, 16, (40, n_features)) if spec is DIGITS else rng.normal(0, 0.05, (40, n_features))
    ints = rng.integers(0, 17 if spec is DIGITS else 2, (40, n_features))
    classification = spec is DIGITS

    r = service.http.get(url, params={"format": "torchscript"})
    assert r.status_code == 200, r.text
    scripted = torch.jit.load(io.BytesIO(r.content))
    onnx_files = {}
    for dtype in ("float32", "float64", "int64"):
        r = service.http.get(url, params={"format": "onnx", "input_dtype": dtype})
        assert r.status_code == 200, r.text
        meta = {p.key: p.value for p in onnx.load_from_string(r.content).metadata_props}
        assert meta["regtrain_job_id"] == job["id"] and meta["input_dtype"] == dtype
        assert meta["task"] == ("classification" if classification else "regression")
        if classification:
            assert json.loads(meta["classes"]) == list(range(10))
        onnx_files[dtype] = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    assert service.http.get(url, params={"format": "onnx", "input_dtype": "int8"}).status_code == 422

    for X in (floats, ints):
        body = {
            "inputs": X.tolist(),
            "checkpoint": "best",
            **({"probabilities": True} if classification else {}),
        }
        r = service.http.post(f"/v1/jobs/{job['id']}/predict", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        with torch.no_grad():
            outs = {"torchscript": scripted(torch.from_numpy(X)).numpy()}
        outs[f"onnx {X.dtype}"] = onnx_files[str(X.dtype)].run(None, {"inputs": X})[0]
        outs["onnx float32"] = onnx_files["float32"].run(None, {"inputs": X.astype(np.float32)})[0]
        for name, out in outs.items():
            if classification:
                assert out.argmax(1).tolist() == answer["predictions"], name
                np.testing.assert_allclose(
                    _softmax(out), answer["probabilities"], rtol=1e-5, atol=1e-5, err_msg=name
                )
            else:
                np.testing.assert_allclose(
                    out[:, 0], answer["predictions"], rtol=1e-5, atol=1e-5, err_msg=name
                )


def test_a_raw_csvs_exports_take_rows_encoded_by_the_clients_reference(service: Service) -> None:
    """Strings and gaps (the raw Palmer penguins CSV): the step a graph cannot hold is in the
    sidecar and the ONNX metadata; regtrain_client.preprocessing.encode_rows applies it to raw
    rows, and the exports then answer what /predict answers for those raw rows."""
    from importlib.resources import files
    from pathlib import Path

    import onnx
    import onnxruntime as ort
    import pandas as pd
    import torch
    from regtrain_client.preprocessing import encode_rows

    penguins = Path(str(files("palmerpenguins") / "data" / "penguins.csv"))
    r = service.http.post(
        "/v1/datasets", files={"file": ("penguins.csv", penguins.read_bytes())}, data={"target": "species"}
    )
    assert r.status_code == 201, r.text
    spec = {
        "dataset": {"id": r.json()["id"]},
        "model": {"type": "mlp", "hidden": [16]},
        "training": {"epochs": 5},
    }
    job = service.wait(service.submit(spec)["id"], timeout=180)
    assert job["status"] == "succeeded", job["error"]
    assert sorted(job["result"]["metrics"]["per_class"]) == ["Adelie", "Chinstrap", "Gentoo"]
    url = f"/v1/jobs/{job['id']}/checkpoints/best"
    sidecar = service.http.get(f"{url}/sidecar").json()

    frame = pd.read_csv(penguins).drop(columns="species")
    # as pandas gives them (NaN in the gaps), the rows with gaps first, and an island never seen
    rows = frame[frame.isna().any(axis=1)].head(10).to_dict("records") + frame.head(20).to_dict("records")
    rows.append({**rows[-1], "island": "Atlantis"})
    body = {"inputs": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()} for row in rows],
            "probabilities": True}  # fmt: skip
    answer = service.http.post(f"/v1/jobs/{job['id']}/predict", json=body)
    assert answer.status_code == 200, answer.text
    expected = answer.json()
    X = np.asarray(encode_rows(sidecar, rows), dtype=np.float64)
    assert X.shape == (len(rows), sidecar["preprocessing"]["n_features"])

    r = service.http.get(url, params={"format": "onnx", "input_dtype": "float64"})
    assert r.status_code == 200, r.text
    meta = {p.key: p.value for p in onnx.load_from_string(r.content).metadata_props}
    assert json.loads(meta["input_columns"]) == list(frame.columns)
    assert json.loads(meta["preprocessing"]) == sidecar["preprocessing"]
    assert json.loads(meta["classes"]) == expected["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    logits = {
        "onnx": ort.InferenceSession(r.content, providers=["CPUExecutionProvider"]).run(None, {"inputs": X})[
            0
        ]
    }
    scripted = torch.jit.load(io.BytesIO(service.http.get(url, params={"format": "torchscript"}).content))
    with torch.no_grad():
        logits["torchscript"] = scripted(torch.from_numpy(X)).numpy()
    for name, out in logits.items():
        assert [expected["classes"][k] for k in out.argmax(1)] == expected["predictions"], name
        np.testing.assert_allclose(
            _softmax(out), expected["probabilities"], rtol=1e-5, atol=1e-5, err_msg=name
        )
