"""Regularization of one model (the solo loop), exactly as docs/REGULARIZATION.md defines it;
the terms' math is worker.training.terms (written once over a trial axis, this is its one-trial
case).

- L2 is λ₂·Σw² (gradient 2λ₂w) and L1 is λ₁·Σ|w| (subgradient λ₁·sign(w)) over the tensors in
  scope: by default every weight matrix and kernel (2+ dimensions) of every layer.
- The penalty's gradient is added to the parameters' gradients directly (foreach ops) rather
  than backpropagated through a penalty term: the same numbers, a fraction of the kernels.
- Proximal L1 soft-thresholds after each step, which gives exact zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from service.contract.spec import EarlyStoppingSpec
from worker.training import terms


def split_parameters(
    model: nn.Module, apply_to: Literal["weights", "all"]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(in scope, out of scope): weights and kernels are tensors of 2+ dimensions; biases and
    normalization parameters are 1-D and join the scope only with apply_to="all"."""
    inside: list[torch.Tensor] = []
    outside: list[torch.Tensor] = []
    for p in model.parameters():
        (inside if apply_to == "all" or p.ndim >= 2 else outside).append(p)
    return inside, outside


class Penalty:
    """λ₁·Σ|w| + λ₂·Σw² over the tensors in scope.

    With `l2_in_optimizer`, the caller has folded 2λ₂ into the optimizer's coupled weight decay
    (sgd, adam and rmsprop add wd·w to the gradient, which is exactly 2λ₂w for wd = 2λ₂), so
    add_gradient leaves L2 out: one fused optimizer op instead of a pass of its own.
    """

    def __init__(
        self, params: list[torch.Tensor], l1: float, l2: float, l1_mode: str, l2_in_optimizer: bool = False
    ) -> None:
        self.params = params
        self.l1, self.l2 = l1, l2
        self.proximal = l1_mode == "proximal"
        self.l2_in_optimizer = l2_in_optimizer
        self.active = bool(params) and (l1 > 0 or l2 > 0)
        # |w| and sign(w) of every step land here: on the CPU a new tensor the size of a layer
        # per step costs more than the pass that fills it
        self.scratch = [torch.empty_like(p) for p in params] if self.active and l1 > 0 else None

    @torch.no_grad()
    def value(self) -> torch.Tensor:
        """The penalty at the current weights, as a 0-d tensor on the device (no host sync)."""
        device = self.params[0].device if self.params else None
        if not self.active:
            return torch.zeros((), device=device)
        return terms.penalty_value(self.params, self.l1, self.l2, terms.SOLO, device, self.scratch)

    @torch.no_grad()
    def add_gradient(self) -> None:
        """g += 2λ₂w (unless folded into the optimizer) + λ₁·sign(w) in subgradient mode."""
        if not self.active:
            return
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in have]
        grads = [g for p in params if (g := p.grad) is not None]
        if self.l2 > 0 and not self.l2_in_optimizer:
            terms.add_scaled(grads, params, 2 * self.l2, terms.SOLO)
        if self.l1 > 0 and not self.proximal:
            scratch = [self.scratch[i] for i in have] if self.scratch is not None else None
            terms.add_l1_subgradient(grads, params, self.l1, terms.SOLO, scratch)

    @torch.no_grad()
    def proximal_step(self, lr: float) -> None:
        """w ← sign(w)·max(|w| − lr·λ₁, 0) after the optimizer's step (softshrink)."""
        if self.active and self.proximal and self.l1 > 0:
            terms.proximal_l1(self.params, lr * self.l1, terms.SOLO)


def max_norm_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every weight tensor max-norm caps, each by its rows (dim 0), one row a unit's incoming
    weights: Linear weights (attention's out-projection among them), Conv1d/Conv2d kernels (one
    output channel's), Embedding tables (one token's vector, or one position's), recurrent
    weight_ih and weight_hh of GRU/LSTM layers and cells (one gate unit's weights from the input
    and from the state), and attention's in-projection (one query, key or value unit's)."""
    found: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Embedding):
            found.append(m.weight)
        elif isinstance(m, nn.RNNBase | nn.RNNCellBase):
            found += [p for name, p in m.named_parameters(recurse=False) if name.startswith("weight_")]
        elif isinstance(m, nn.MultiheadAttention):
            found += [
                p
                for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
                if (p := getattr(m, name, None)) is not None
            ]
    return found


@torch.no_grad()
def apply_max_norm(model: nn.Module, c: float) -> None:
    """Scale each unit's incoming weight vector (a row of max_norm_tensors' tensors: a row of a
    Linear weight, a kernel of a Conv's output channel, an embedding's row, a gate unit's row of
    a recurrent or attention projection) down to norm ≤ c."""
    for w in max_norm_tensors(model):
        terms.cap_unit_norms(w, c)


@torch.no_grad()
def weight_stats(params: list[torch.Tensor]) -> tuple[float, float]:
    """(L2 norm, fraction of exact zeros) of the regularized tensors, as reported each epoch."""
    if not params:
        return 0.0, 0.0
    norm = torch.stack(torch._foreach_norm(params, 2)).square().sum().sqrt()
    zeros = sum(int((p == 0).sum()) for p in params)
    return float(norm), zeros / sum(p.numel() for p in params)


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without an improvement larger than min_delta."""

    monitor: str
    mode: Literal["min", "max"]
    patience: int
    min_delta: float
    best: float | None = None
    best_epoch: int | None = None
    bad_evaluations: int = 0

    @classmethod
    def for_spec(cls, spec: EarlyStoppingSpec | None, monitor: str) -> EarlyStopping:
        """A job's early stopping; with none in its spec, one that only keeps the best epoch."""
        if spec is None:
            return cls(monitor, "min", 1 << 30, 0.0)
        return cls(monitor, spec.mode, spec.patience, spec.min_delta)

    def improved(self, value: float | None) -> bool:
        """A missing (None) or non-finite value never improves."""
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float | None, epoch: int) -> bool:
        """Record one evaluation; True when it improved on the best."""
        if value is not None and self.improved(value):
            self.best, self.best_epoch, self.bad_evaluations = value, epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_evaluations = d["best"], d["best_epoch"], d["bad_evaluations"]
