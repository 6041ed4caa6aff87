"""Trained models for use outside regtrain: TorchScript and ONNX files that take raw inputs.

The exported graph standardizes its inputs with the statistics of the job's train split (and,
for regression, maps outputs back to the target's units), so a user feeds it the same features
as the dataset and needs nothing else from regtrain. Classification graphs return logits; the
class labels are in the checkpoint's sidecar (`classes`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.contract.exports import ExportFormat
from worker.training.data import Standardization
from worker.training.inference import load_model


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
        return self.model((x - self.mean) / self.std) * self.out_scale + self.out_shift


def export(weights: Path, sidecar: dict[str, Any], fmt: ExportFormat, out: Path) -> Path:
    """Write the checkpoint's model as `fmt` to `out` (atomically) and return it."""
    model = load_model(weights, sidecar)
    st = Standardization.from_dict(sidecar["standardization"])
    wrapped = RawInputs(model, st, sidecar["task"] == "regression").eval()
    example = torch.zeros(2, *(int(v) for v in sidecar["input_shape"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # both exporters announce their deprecations at length
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(wrapped, example), str(tmp))
        else:
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, input_names=["inputs"],
                output_names=["outputs"], dynamic_axes={"inputs": {0: "batch"}, "outputs": {0: "batch"}},
            )  # fmt: skip
    tmp.replace(out)
    return out
