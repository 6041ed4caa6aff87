"""The regularization terms, each written once over a trial axis (docs/REGULARIZATION.md).

A term's hyper-parameter is a float for one trial (the solo loop: tensors without a trial axis)
or a (G,) tensor for G stacked trials, broadcast along each parameter's trial axis (TrialAxis).
Every term has its value (per trial: a 0-d tensor, or (G,)), its gradient (added to the
parameters' gradients in place, not backpropagated: the same numbers, a fraction of the kernels)
and, where it has one, its proximal step:

- L2: λ₂·Σw², gradient 2λ₂w (coupled weight decay wd·w is the same gradient with 2λ₂ = wd);
- L1: λ₁·Σ|w|, subgradient λ₁·sign(w), or the proximal step w ← sign(w)·max(|w| − lr·λ₁, 0);
- decoupled weight decay (AdamW): w ← w·(1 − lr·wd), before the optimizer's step;
- max-norm: each unit's incoming weight vector scaled down to norm ≤ c, after the step.

With no trial axis the list ops are torch._foreach_* (one call for the whole list: on the CPU
the per-tensor calls' overhead is what a small model's step is made of).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

Hyper = float | torch.Tensor  # one trial's number, or (G,) per trial


@dataclass
class TrialAxis:
    """Where each parameter keeps its trials: `axes[id(p)]` its trial axis, for G trials. The
    one-trial case (SOLO) has no axes: hyper-parameters are floats and values 0-d tensors."""

    G: int = 1
    axes: dict[int, int] = field(default_factory=dict)

    @property
    def solo(self) -> bool:
        return not self.axes

    def along(self, v: Hyper, p: torch.Tensor) -> Hyper:
        """v shaped to broadcast along p's trial axis (a float stays a float)."""
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or id(p) not in self.axes:
            return v
        shape = [1] * p.dim()
        shape[self.axes[id(p)]] = self.G
        return v.view(shape)

    def view(self, v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """A (G,) tensor shaped to broadcast along p's trial axis."""
        out = self.along(v, p)
        assert isinstance(out, torch.Tensor)
        return out

    def dims(self, p: torch.Tensor) -> list[int] | None:
        """The dimensions to reduce for a per-trial total (None: all of them)."""
        if id(p) not in self.axes:
            return None
        return [d for d in range(p.dim()) if d != self.axes[id(p)]]

    def total(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """t (shaped like p) summed over everything but the trial axis: (G,), or 0-d."""
        if self.leading(t, p):  # each trial's block contiguous: one row each
            return t.view(self.G, -1).sum(1)
        dims = self.dims(p)
        return t.sum() if dims is None else t.sum(dims)

    def leading(self, t: torch.Tensor, p: torch.Tensor) -> bool:
        """Whether t's trials lie along its first axis, each a contiguous block (then a
        per-trial reduction reads rows in order: on the CPU 3-6x faster than over split dims)."""
        return self.axes.get(id(p)) == 0 and t.is_contiguous()


SOLO = TrialAxis()


def _nonzero(v: Hyper) -> bool:
    # a tensor counts as in use (the caller passes 0.0 for a term no trial uses): reading it
    # back would be a host sync inside the step
    return True if isinstance(v, torch.Tensor) else v > 0


@torch.no_grad()
def l2_value(params: Sequence[torch.Tensor], l2: Hyper, ax: TrialAxis) -> torch.Tensor:
    """λ₂·Σw² per trial (one trial's: penalty_value's _solo_value)."""
    return l2 * torch.stack([_norms(p, 2, ax) for p in params]).square().sum(0)


def _norms(p: torch.Tensor, order: int, ax: TrialAxis) -> torch.Tensor:
    """Each trial's `order`-norm of p (G,)."""
    if ax.leading(p, p):
        return torch.linalg.vector_norm(p.view(ax.G, -1), order, dim=1)
    return torch.linalg.vector_norm(p, order, dim=ax.dims(p))


@torch.no_grad()
def l1_value(
    params: Sequence[torch.Tensor], l1: Hyper, ax: TrialAxis, scratch: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """λ₁·Σ|w| per trial (abs().sum(): on CPU about twice as fast as a 1-norm kernel; into
    `scratch`, buffers shaped like params, where given)."""
    bufs = scratch if scratch is not None else [None] * len(params)
    return l1 * torch.stack(
        [ax.total(torch.abs(p, out=b), p) for p, b in zip(params, bufs, strict=True)]
    ).sum(0)


@torch.no_grad()
def penalty_value(
    params: Sequence[torch.Tensor],
    l1: Hyper,
    l2: Hyper,
    ax: TrialAxis,
    device: torch.device | None,
    scratch: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """λ₁·Σ|w| + λ₂·Σw² per trial, on the device (no host sync)."""
    if ax.solo and params:
        return _solo_value(params, float(l1), float(l2), scratch)
    total: torch.Tensor | None = None
    if params and _nonzero(l2):
        total = l2_value(params, l2, ax)
    if params and _nonzero(l1):
        value = l1_value(params, l1, ax, scratch)
        total = value if total is None else total.add_(value)
    return total if total is not None else torch.zeros(() if ax.solo else ax.G, device=device)


def _solo_value(
    params: Sequence[torch.Tensor], l1: float, l2: float, scratch: Sequence[torch.Tensor] | None
) -> torch.Tensor:
    """One trial's λ₁·Σ|w| + λ₂·Σw², each tensor's two sums in turn (Σw² a BLAS dot; |w| into
    `scratch` where given): a solo step computes it on every batch, and for a small model the
    list ops' stacking and a new tensor per |w| cost more than the sums (160 → 76 us a step for
    a 784-128-10 MLP, 137 us of which was a fresh 100k-float |w| under the profiler)."""
    total: torch.Tensor | None = None
    for i, p in enumerate(params):
        v = p.reshape(-1)
        if l1 > 0:
            a = torch.abs(v, out=scratch[i].view(-1)) if scratch is not None else v.abs()
            term = a.sum().mul_(l1)
        else:
            term = torch.zeros((), device=p.device)
        if l2 > 0:
            term.add_(torch.dot(v, v), alpha=l2)
        total = term if total is None else total.add_(term)
    assert total is not None
    return total


@torch.no_grad()
def add_scaled(grads: list[torch.Tensor], params: Sequence[torch.Tensor], coef: Hyper, ax: TrialAxis) -> None:
    """g += coef·w: L2's gradient (coef 2λ₂) and coupled weight decay's (coef wd)."""
    if ax.solo:
        torch._foreach_add_(grads, list(params), alpha=float(coef))
        return
    for g, p in zip(grads, params, strict=True):
        g.addcmul_(ax.along(coef, p), p)  # type: ignore[arg-type]


@torch.no_grad()
def add_l1_subgradient(
    grads: list[torch.Tensor],
    params: list[torch.Tensor],
    l1: Hyper,
    ax: TrialAxis,
    scratch: Sequence[torch.Tensor] | None = None,
) -> None:
    """g += λ₁·sign(w) (`scratch`: buffers shaped like params for the signs)."""
    if ax.solo:
        signs = (
            [torch.sign(p, out=b) for p, b in zip(params, scratch, strict=True)]
            if scratch is not None
            else torch._foreach_sign(list(params))
        )
        torch._foreach_add_(grads, signs, alpha=float(l1))
        return
    for i, (g, p) in enumerate(zip(grads, params, strict=True)):
        sign = torch.sign(p, out=scratch[i]) if scratch is not None else torch.sign(p)
        g.addcmul_(ax.along(l1, p), sign)  # type: ignore[arg-type]


@torch.no_grad()
def proximal_l1(params: Sequence[torch.Tensor], threshold: Hyper, ax: TrialAxis) -> None:
    """w ← sign(w)·max(|w| − τ, 0) with τ = lr·λ₁ per trial (softshrink): exact zeros."""
    for p in params:
        if isinstance(threshold, torch.Tensor):
            tau = ax.along(threshold, p)
            p.copy_(torch.sign(p) * torch.clamp(p.abs() - tau, min=0))
        else:
            p.copy_(torch.nn.functional.softshrink(p, threshold))


@torch.no_grad()
def decoupled_decay(params: Sequence[torch.Tensor], lr_wd: Hyper, ax: TrialAxis) -> None:
    """w ← w·(1 − lr·wd), AdamW's weight decay, before its step."""
    for p in params:
        p.mul_(1 - ax.along(lr_wd, p))


@torch.no_grad()
def cap_unit_norms(w: torch.Tensor, c: float, unit_dim: int = 0, incoming: list[int] | None = None) -> None:
    """Scale each unit's incoming weights down to norm ≤ c: the rows (dim `unit_dim`) of a solo
    tensor, or, stacked, the norms over the `incoming` dims (keeping the trial and unit axes)."""
    if incoming is None:
        w.copy_(torch.renorm(w, p=2, dim=unit_dim, maxnorm=c))
        return
    norms = w.norm(dim=incoming, keepdim=True)
    w.mul_(torch.clamp(c / (norms + 1e-7), max=1.0))
