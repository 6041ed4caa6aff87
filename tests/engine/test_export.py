"""TorchScript and ONNX exports take raw inputs and give what the server's predictions give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from service.contract.spec import JobSpec
from worker.training.data import prepare
from worker.training.export import export
from worker.training.inference import Predictor
from worker.training.runner import run_job


def _trained(tmp_path: Path, dataset: str) -> tuple[Path, dict[str, Any], Any]:
    spec = JobSpec.model_validate(
        {"dataset": {"name": dataset}, "model": {"type": "mlp", "hidden": [16]}, "training": {"epochs": 2}}
    )
    run_job(spec, tmp_path)
    weights = tmp_path / "checkpoints" / "final.safetensors"
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    data = prepare(spec)
    # raw inputs: undo the standardization prepare() applied to the test split
    st = data.standardization
    return weights, sidecar, data.X_test * st.std + st.mean


@pytest.mark.parametrize("dataset", ["digits", "diabetes"])
def test_torchscript_takes_raw_inputs_and_matches_predict(tmp_path: Path, dataset: str) -> None:
    weights, sidecar, raw = _trained(tmp_path, dataset)
    model = torch.jit.load(str(export(weights, sidecar, "torchscript", tmp_path / "m.pt")))
    out = model(torch.as_tensor(raw, dtype=torch.float32))
    expected = Predictor(weights, sidecar).predict(raw.tolist())
    if dataset == "digits":
        assert [sidecar["classes"][i] for i in out.argmax(1).tolist()] == expected
    else:
        np.testing.assert_allclose(out.squeeze(-1).detach().numpy(), expected, rtol=1e-4, atol=1e-3)


def test_onnx_is_a_valid_model_with_a_dynamic_batch(tmp_path: Path) -> None:
    weights, sidecar, _ = _trained(tmp_path, "iris")
    model = onnx.load(str(export(weights, sidecar, "onnx", tmp_path / "m.onnx")))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == "inputs"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 4


@pytest.mark.parametrize("dataset", ["digits", "diabetes"])
def test_torchscript_takes_float64_and_int64_as_numpy_and_pandas_give_them(
    tmp_path: Path, dataset: str
) -> None:
    """The graph casts its input: what a float32 tensor gives, a float64 or int64 one gives."""
    weights, sidecar, raw = _trained(tmp_path, dataset)
    model = torch.jit.load(str(export(weights, sidecar, "torchscript", tmp_path / "m.pt")))
    raw64 = np.asarray(raw, dtype=np.float64)
    with torch.no_grad():
        expected = model(torch.from_numpy(raw64.astype(np.float32)))
        np.testing.assert_allclose(model(torch.from_numpy(raw64)), expected, rtol=1e-6, atol=1e-6)
        ints = np.rint(raw64).astype(np.int64)  # digits' pixels are integers already
        np.testing.assert_allclose(
            model(torch.from_numpy(ints)),
            model(torch.from_numpy(ints.astype(np.float32))),
            rtol=1e-6,
            atol=1e-6,
        )


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_onnx_runs_in_onnxruntime_on_its_input_dtype_and_matches_predict(tmp_path: Path, dtype: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    weights, sidecar, raw = _trained(tmp_path, "digits")
    path = export(weights, sidecar, "onnx", tmp_path / "m.onnx", input_dtype=dtype, job_id="job-1")  # type: ignore[arg-type]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (
        inp.type == {"float32": "tensor(float)", "float64": "tensor(double)", "int64": "tensor(int64)"}[dtype]
    )
    x = np.asarray(raw, dtype=np.float64)
    x = np.rint(x).astype(np.int64) if dtype == "int64" else x.astype(dtype)  # digits: integer pixels
    (logits,) = session.run(None, {"inputs": x})
    expected = Predictor(weights, sidecar).predict(x.tolist())
    assert [sidecar["classes"][i] for i in logits.argmax(1).tolist()] == expected
    ts = torch.jit.load(str(export(weights, sidecar, "torchscript", tmp_path / "m.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(logits, ts(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_onnx_metadata_carries_classes_task_job_and_columns(tmp_path: Path) -> None:
    weights, sidecar, _ = _trained(tmp_path, "iris")
    pre = {"format": "regtrain-preprocessing/1", "n_features": 4, "columns": [
        {"name": n, "type": "numeric", "impute": "mean", "fill": 1.0, "indicator": False}
        for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]}  # fmt: skip
    model = onnx.load(
        str(export(weights, {**sidecar, "preprocessing": pre}, "onnx", tmp_path / "m.onnx", job_id="j-9"))
    )
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == sidecar["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["task"] == "classification" and meta["regtrain_job_id"] == "j-9"
    assert meta["input_dtype"] == "float32" and json.loads(meta["input_shape"]) == [4]
    assert json.loads(meta["input_columns"]) == [c["name"] for c in pre["columns"]]
    assert json.loads(meta["preprocessing"]) == pre
    # a built-in dataset's features are its columns: no names to give, no preprocessing
    plain = {
        p.key: p.value
        for p in onnx.load(str(export(weights, sidecar, "onnx", tmp_path / "p.onnx"))).metadata_props
    }
    assert "input_columns" not in plain and "preprocessing" not in plain and "regtrain_job_id" not in plain
