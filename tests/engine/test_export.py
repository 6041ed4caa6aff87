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
