"""Models: one factory that builds the layers service.contract.architecture plans.

The plan is computed without torch by the API too, so the parameter count the API checks is
the one the engine builds. Adding a layer kind is one entry in LAYERS; adding a model type is
one planner in service.contract.architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from service.contract.architecture import DataShape, LayerPlan, plan_model
from service.contract.spec import JobSpec

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}

LAYERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "linear": lambda a: nn.Linear(a["in"], a["out"]),
    "conv2d": lambda a: nn.Conv2d(a["in"], a["out"], a["kernel"], a["stride"], a["padding"]),
    "batch_norm1d": lambda a: nn.BatchNorm1d(a["n"]),
    "batch_norm2d": lambda a: nn.BatchNorm2d(a["n"]),
    "act": lambda a: ACTIVATIONS[a["fn"]](),
    "dropout": lambda a: nn.Dropout(a["p"]),
    "dropout2d": lambda a: nn.Dropout2d(a["p"]),
    "max_pool2d": lambda a: nn.MaxPool2d(a["kernel"]),
    "flatten": lambda a: nn.Flatten(),
}


def build(plan: list[LayerPlan]) -> nn.Sequential:
    return nn.Sequential(*(LAYERS[layer.kind](layer.args) for layer in plan))


def create_model(spec: JobSpec, shape: DataShape) -> nn.Sequential:
    """The spec's model for data of this shape (initialized from torch's current RNG)."""
    return build(plan_model(spec, shape))
