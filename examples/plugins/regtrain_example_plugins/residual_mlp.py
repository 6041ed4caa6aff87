"""The `residual_mlp` model type, as the API and the planner see it (no torch).

A tabular network: an input projection to `width`, then `blocks` residual blocks
(x + Linear(act(Linear(x))), dropout on the block's hidden activation), then a linear output
layer. Importing this module (the `regtrain.models` entry point) registers it; the module the
workers build is torch_model.build, named by path so that the API never imports torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.contract.architecture import DataShape, LayerPlan, model_type
from service.contract.errors import SpecError
from service.contract.spec import Activation, Dropout, ModelConfig, Width


class ResidualMLPSpec(ModelConfig):
    """Residual MLP: input Linear → `blocks` × (x + Linear(act(Linear(x)))) → output Linear."""

    type: Literal["residual_mlp"]
    width: Width = Field(64, description="Width of the residual stream.")
    blocks: int = Field(2, ge=1, le=16, description="Residual blocks.")
    activation: Activation = "relu"
    dropout: Dropout = Field(0.0, description="Dropout on each block's hidden activation.")


def _linear(n_in: int, n_out: int) -> LayerPlan:
    return LayerPlan("linear", {"in": n_in, "out": n_out}, n_in * n_out + n_out, n_out)


@model_type("residual_mlp", spec=ResidualMLPSpec, factory="regtrain_example_plugins.torch_model:build")
def plan(m: ResidualMLPSpec, shape: DataShape) -> list[LayerPlan]:
    """The layers torch_model builds, with their parameters and the activations one sample keeps
    for backward (what the API's parameter and memory checks count)."""
    if shape.sequence is not None:
        raise SpecError(("model", "type"), "a residual_mlp takes rows (or images, flattened), not sequences")
    layers = [_linear(shape.n_features, m.width)]
    for _ in range(m.blocks):
        layers += [_linear(m.width, m.width), LayerPlan("act", {"fn": m.activation}, 0, m.width)]
        if m.dropout > 0:
            layers.append(LayerPlan("dropout", {"p": m.dropout}, 0, m.width))
        layers += [_linear(m.width, m.width), LayerPlan("add", {}, 0, m.width)]
    layers.append(_linear(m.width, shape.n_outputs))
    return layers
