"""The `residual_mlp` module (torch): imported by workers only, through the factory path that
residual_mlp.py registers."""

from __future__ import annotations

import torch
from torch import nn

from regtrain_example_plugins.residual_mlp import ResidualMLPSpec
from service.contract.architecture import DataShape
from worker.training.models import ACTIVATIONS


class Block(nn.Module):
    def __init__(self, width: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)  # on the hidden activation only, never on the output
        self.outer = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(self.drop(self.act(self.inner(x))))


class ResidualMLP(nn.Module):
    def __init__(self, m: ResidualMLPSpec, n_in: int, n_out: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()  # images arrive as rows (the type does not ask for (C, H, W))
        self.inp = nn.Linear(n_in, m.width)
        self.blocks = nn.Sequential(*(Block(m.width, m.activation, m.dropout) for _ in range(m.blocks)))
        self.out = nn.Linear(m.width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(self.flatten(x))))


def build(m: ResidualMLPSpec, shape: DataShape) -> nn.Module:
    """The factory regtrain's engine calls: (config, data shape) → nn.Module."""
    return ResidualMLP(m, shape.n_features, shape.n_outputs)
