"""Models: one factory that builds the layers service.contract.architecture plans.

The plan is computed without torch by the API too, so the parameter count the API checks is
the one the engine builds. Adding a layer kind is one entry in LAYERS; adding a model type is
one planner in service.contract.architecture.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from service.contract.architecture import DataShape, LayerPlan, model_type_of, parameter_count, plan_model
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


def from_factory(path: str, spec: JobSpec, shape: DataShape, planned: int) -> nn.Module:
    """The module a registered factory ("package.module:function") builds: imported here, in
    the worker, so that the API never imports a plugin's torch code. Its parameter count must be
    the planner's, which is what the API checked against the caps."""
    module, _, name = path.partition(":")
    model = getattr(importlib.import_module(module), name)(spec.model, shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path} returned {type(model).__name__}, not an nn.Module")
    built = sum(p.numel() for p in model.parameters())
    if built != planned:
        raise ValueError(
            f"{spec.model.type}: {path} built {built:,} parameters, its planner counted {planned:,}"
        )
    return model


def create_model(spec: JobSpec, shape: DataShape) -> nn.Module:
    """The spec's model for data of this shape (initialized from torch's current RNG)."""
    plan = plan_model(spec, shape)  # refuses what cannot be built, for every type
    factory = model_type_of(spec.model.type).factory
    if factory is not None:
        return from_factory(factory, spec, shape, parameter_count(plan))
    return build(plan)
