"""Trained models for use outside regtrain: TorchScript and ONNX files that take raw inputs.

The exported graph standardizes its inputs with the statistics of the job's train split (and,
for regression, maps outputs back to the target's units), so a user feeds it the same features
as the dataset and needs nothing else from regtrain. Classification graphs return logits; the
class labels are in the checkpoint's sidecar (`classes`) and in the ONNX file's metadata.

Inputs come as users have them: numpy and pandas give float64, integer columns int64. The
graph casts its input to float32 itself. TorchScript takes any numeric dtype through one file.
ONNX types its graph inputs and onnxruntime refuses any other dtype, so an ONNX file is made for
one input dtype: float32 by default (the ONNX norm, what converters and onnxruntime users
expect), or float64 / int64 with the Cast as the graph's first node
(`?format=onnx&input_dtype=float64`).

A text model's graph takes token ids (int64, N×T, 0 the padding after each row's tokens):
tokenizing strings cannot live in a graph, so the sidecar's `text` (and the ONNX file's
`text` metadata) holds the tokenizer's JSON and its max length (worker.training.text).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from service.contract.errors import Conflict
from service.contract.exports import ExportFormat, ExportInputDtype
from worker.training.data import Standardization
from worker.training.inference import load_model
from worker.training.sequence_models import frame_lengths


class RawInputs(nn.Module):
    """model((x − mean) / std), then × target_std + target_mean for regression."""

    # buffers, declared so a reader (and mypy) knows them as tensors, not submodules
    mean: torch.Tensor
    std: torch.Tensor
    out_scale: torch.Tensor
    out_shift: torch.Tensor

    def __init__(self, model: nn.Module, st: Standardization, regression: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(st.mean))
        self.register_buffer("std", torch.as_tensor(st.std))
        scale = (st.target_std, st.target_mean) if regression else (1.0, 0.0)
        self.register_buffer("out_scale", torch.tensor(scale[0]))
        self.register_buffer("out_shift", torch.tensor(scale[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in the graph: float64 (numpy, pandas) and integer inputs are taken as they come
        x = x.to(torch.float32)
        z = (x - self.mean) / self.std
        if x.dim() == 3:  # frames N×T×F: trailing all-zero frames are padding, zero for the model
            steps = torch.arange(x.shape[1], device=x.device)[None, :]
            z = z * (steps < frame_lengths(x)[:, None]).unsqueeze(-1).to(z.dtype)
        return self.model(z) * self.out_scale + self.out_shift


class TokenIds(nn.Module):
    """A text model's graph: token ids N×T (int64, 0 the padding after each row's tokens) in,
    as worker.training.text encodes them; regression outputs in the target's units. The
    tokenizer cannot live in the graph: the sidecar's (and the ONNX metadata's) `text` holds
    its JSON, which Hugging Face `tokenizers` loads (Tokenizer.from_str)."""

    out_scale: torch.Tensor
    out_shift: torch.Tensor

    def __init__(self, model: nn.Module, st: Standardization, regression: bool) -> None:
        super().__init__()
        self.model = model
        scale = (st.target_std, st.target_mean) if regression else (1.0, 0.0)
        self.register_buffer("out_scale", torch.tensor(scale[0]))
        self.register_buffer("out_shift", torch.tensor(scale[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.int64)) * self.out_scale + self.out_shift


_TORCH_DTYPE: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "int64": torch.int64,
}


def input_columns(sidecar: dict[str, Any]) -> list[str] | None:
    """The dataset's feature columns, in file order, when the checkpoint knows them: the columns
    of its `preprocessing` (service.data.columns' JSON), which turns raw rows keyed or ordered by
    them into the matrix the graph takes; None for data whose columns are its features."""
    columns = (sidecar.get("preprocessing") or {}).get("columns")
    if isinstance(columns, list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns
    ):
        return [c["name"] for c in columns]
    return None


def onnx_metadata(
    sidecar: dict[str, Any], input_dtype: ExportInputDtype, job_id: str | None
) -> dict[str, str]:
    """What an ONNX file says about itself (`metadata_props`, strings; JSON where structured):
    enough to turn its outputs into labels and to build its input matrix, with no regtrain."""
    meta = {
        "task": str(sidecar["task"]),
        "classes": json.dumps(sidecar.get("classes") or []),
        "input_shape": json.dumps([int(v) for v in sidecar["input_shape"]]),
        "input_dtype": input_dtype,
        "outputs": "logits" if sidecar["task"] == "classification" else "values in the target's units",
        "checkpoint_epoch": str(sidecar.get("epoch", "")),
        "standardization": "in the graph",
    }
    columns = input_columns(sidecar)
    if columns is not None:
        meta["input_columns"] = json.dumps(columns)
    if sidecar.get("preprocessing"):
        # the steps that cannot live in a graph (strings: categories, their imputation): apply
        # them with regtrain_client.preprocessing.encode_rows before feeding the model
        meta["preprocessing"] = json.dumps(sidecar["preprocessing"])
    if sidecar.get("text"):
        meta["text"] = json.dumps(sidecar["text"])  # the tokenizer: ids in, not strings
    if job_id is not None:
        meta["regtrain_job_id"] = job_id
    return meta


def export(
    weights: Path,
    sidecar: dict[str, Any],
    fmt: ExportFormat,
    out: Path,
    *,
    input_dtype: ExportInputDtype = "float32",
    job_id: str | None = None,
) -> Path:
    """Write the checkpoint's model as `fmt` to `out` (atomically) and return it. `input_dtype`
    types an ONNX file's input (TorchScript takes every numeric dtype)."""
    model = load_model(weights, sidecar)
    st = Standardization.from_dict(sidecar["standardization"])
    regression = sidecar["task"] == "regression"
    shape = [int(v) for v in sidecar["input_shape"]]
    wrapped: nn.Module
    if sidecar.get("text"):
        wrapped = TokenIds(model, st, regression).eval()
        example = torch.zeros(2, *shape, dtype=torch.int64)
        example[0, :] = 1  # one full row and one of a single token: both lengths in the trace
        example[1, 0] = 1
        if fmt == "onnx":
            input_dtype = "int64"  # token ids
    else:
        wrapped = RawInputs(model, st, regression).eval()
        dtype = _TORCH_DTYPE[input_dtype] if fmt == "onnx" else torch.float32
        example = torch.zeros(2, *shape, dtype=dtype)
        if len(shape) == 2:  # frames: one full sequence and one of a single frame, as for text
            example[0] = 1
            example[1, 0] = 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # both exporters announce their deprecations at length
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(wrapped, example), str(tmp))
        else:
            try:
                torch.onnx.export(
                    wrapped, (example,), str(tmp), dynamo=False, input_names=["inputs"],
                    output_names=["outputs"], dynamic_axes={"inputs": {0: "batch"}, "outputs": {0: "batch"}},
                )  # fmt: skip
            except torch.onnx.errors.UnsupportedOperatorError as e:
                # The model is fine, ONNX has no such operator (the transformer's fused encoder
                # layer): the caller's 409 names it; TorchScript exports the same model.
                tmp.unlink(missing_ok=True)
                raise Conflict(
                    f"format=onnx: this model uses an operator ONNX cannot express ({_operator(e)}); "
                    "export it as format=torchscript"
                ) from None
            graph = onnx.load(str(tmp))
            onnx.helper.set_model_props(graph, onnx_metadata(sidecar, input_dtype, job_id))
            onnx.save(graph, str(tmp))
    tmp.replace(out)
    return out


def _operator(e: Exception) -> str:
    """The operator an UnsupportedOperatorError names (`aten::…`), else its first line."""
    text = str(e)
    found = [w.strip("'\".,") for w in text.split() if "::" in w]
    return found[0] if found else text.splitlines()[0][:200]
