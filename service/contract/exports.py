"""The formats a trained checkpoint exports to (GET …/checkpoints/{name}?format=…), and the
suffix of each file: the API names its downloads by them, the engine writes them."""

from __future__ import annotations

from typing import Literal

ExportFormat = Literal["torchscript", "onnx"]
EXPORT_SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}
# The dtype an ONNX file's input is typed as (onnxruntime feeds no other); the graph casts it to
# float32 itself. TorchScript takes every numeric dtype in one file.
ExportInputDtype = Literal["float32", "float64", "int64"]
# Part of a kept export's name: an export made by an older release (no cast, no metadata) is not
# served once its format changed
EXPORT_REVISION = "r2"
