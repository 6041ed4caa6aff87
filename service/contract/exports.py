"""The formats a trained checkpoint exports to (GET …/checkpoints/{name}?format=…), and the
suffix of each file: the API names its downloads by them, the engine writes them."""

from __future__ import annotations

from typing import Literal

ExportFormat = Literal["torchscript", "onnx"]
EXPORT_SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}
