"""The optimizer updates, each written once over a trial axis, with the torch optimizer that
does the same for one trial.

An entry (SGD, Adam, AdamW, RMSprop) has three faces, held equal by tests/engine/test_updates.py:
- `update(p, g, state, o, lr, t)` (and `update_all` for a parameter list): the step for a
  parameter whose trials lie along a trial axis, with per-trial learning rates `lr` and step
  counts `t` broadcast along it (the stacked trainer on CUDA, where its captured graph makes
  the step's passes free of launches; the count is per trial, so a slot refilled with a new
  trial starts its Adam bias correction afresh). Intermediates go to a scratch buffer: a new
  3 MB tensor per intermediate per step costs more on the CPU than a stacked layer's arithmetic;
- `step_trials(views, o, lrs)`: the same step on the CPU, trial by trial through torch's fused
  one-trial kernel (`kernel`) on each trial's contiguous block (one pass over p, g and the state
  where `update` makes about eight; SGD and Adam/AdamW have one, RMSprop not: it takes `update`);
- `torch_optimizer(groups, o, device)`: the torch.optim optimizer the solo loop steps. The solo
  loop keeps torch.optim because it keeps what the loop needs at no cost of ours: fused CUDA
  kernels that a CUDA graph can capture, fused kernels on the CPU (whose step the loop makes
  straight into the kernel: worker.training.optim.step_function), and an optimizer state_dict
  that checkpoints (and old checkpoints) resume from.

Weight decay is not part of the update: it is the L2-shaped term of worker.training.terms,
coupled (in the gradient: sgd, adam, rmsprop) or decoupled (adamw), as `decoupled` says.
The LR schedules are here too: `lr_factor` is the closed form both trainers' schedules follow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from service.contract.spec import CosineScheduler, OptimizerSpec, StepScheduler
from worker.training.terms import TrialAxis

State = dict[str, torch.Tensor]
Lr = float | torch.Tensor  # broadcast along the parameter's trial axis
# a buffer shaped like the parameter for the step's intermediates: on the CPU a new 3 MB tensor
# per intermediate per step costs more than the arithmetic of a stacked first layer
Scratch = torch.Tensor | None


def _fast(device: torch.device, capturable: bool = True) -> dict[str, bool]:
    # fused kernels: on CUDA one launch for all tensors, capturable so that the step can be
    # replayed from a CUDA graph; on the CPU one pass over each tensor (a 784-128-10 MLP's Adam
    # step: 0.8 ms through foreach's dozen list ops and their Python, a tenth of that fused)
    if device.type == "cuda":
        return {"fused": True, "capturable": True} if capturable else {"fused": True}
    return {"fused": True}


@dataclass(frozen=True)
class Update:
    name: str
    decoupled: bool = False  # weight decay w ← w·(1 − lr·wd) rather than in the gradient

    def state_names(self, o: OptimizerSpec) -> tuple[str, ...]:
        raise NotImplementedError

    def init_state(self, p: torch.Tensor, o: OptimizerSpec) -> State:
        """Fresh state: zeros (a zero momentum buffer gives torch's first step, buf = g)."""
        return {k: torch.zeros_like(p) for k in self.state_names(o)}

    def update(
        self,
        p: torch.Tensor,
        g: torch.Tensor,
        st: State,
        o: OptimizerSpec,
        lr: Lr,
        t: Any,
        scratch: Scratch = None,
    ) -> None:
        raise NotImplementedError

    def update_all(
        self,
        params: Sequence[torch.Tensor],
        states: list[State],
        o: OptimizerSpec,
        lr: torch.Tensor,
        t: torch.Tensor,
        ax: TrialAxis,
        scratch: Sequence[torch.Tensor],
    ) -> None:
        """Every parameter's step, with (G,) learning rates and step counts along each one's
        trial axis; `scratch[i]` a buffer shaped like params[i] (the step allocates nothing).
        What depends on the trial only (per_step) is computed once, not once per parameter."""
        a, b = self.per_step(o, lr, t)
        for p, st, buf in zip(params, states, scratch, strict=True):
            assert p.grad is not None
            self.apply(p, p.grad, st, o, ax.along(a, p), ax.along(b, p), buf)

    def per_step(self, o: OptimizerSpec, lr: Lr, t: Any) -> tuple[Any, Any]:
        """The step's per-trial numbers that apply reads: (lr, t) as given, unless an entry
        derives its own from them (Adam: its bias-corrected step size)."""
        return lr, t

    def apply(
        self, p: torch.Tensor, g: torch.Tensor, st: State, o: OptimizerSpec, a: Any, b: Any, scratch: Scratch
    ) -> None:
        """One parameter's step from per_step's numbers."""
        self.update(p, g, st, o, a, b, scratch)

    # whether the entry has a fused one-trial `kernel`: the stacked trainer on the CPU then steps
    # trial by trial (step_trials) and folds a coupled weight decay (L2's 2λ₂ and the
    # optimizer's own) into it instead of a pass of its own
    trial_kernel = False

    def step_trials(
        self,
        trials: list[TrialViews],
        o: OptimizerSpec,
        lrs: list[float],
        decay: list[float] | None = None,
        decayed: list[bool] | None = None,
    ) -> None:
        """Each trial's step through torch's fused one-trial kernel (one pass over p, g and the
        state, where update_all makes several), trial by trial with its own lr and step count;
        `trials` holds only those to step. `decay`: each trial's coupled weight decay (g +=
        decay·w inside the kernel), on the tensors `decayed` marks (default all); never a
        decoupled one (AdamW's is the terms' pass). Only for an entry with `trial_kernel`."""
        if decay is not None and self.decoupled:
            raise ValueError("a decoupled weight decay is not folded into the kernel")
        for tv, lr, wd in zip(trials, lrs, decay or [0.0] * len(trials), strict=True):
            for part, w in _decay_parts(tv, wd, decayed):
                self.kernel(part, o, lr, w)

    def kernel(self, tv: TrialViews, o: OptimizerSpec, lr: float, weight_decay: float) -> None:
        """One trial's step of the tensors in `tv`, with a coupled weight decay, in one call of
        torch's fused kernel (entries with `trial_kernel`)."""
        raise NotImplementedError

    def torch_optimizer(
        self, groups: list[dict[str, Any]], o: OptimizerSpec, device: torch.device
    ) -> torch.optim.Optimizer:
        raise NotImplementedError


@dataclass
class TrialViews:
    """One trial's block of every parameter, its gradient and its optimizer state, and its
    step count (0-d): slices along trial axis 0 of contiguous tensors, so contiguous too."""

    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    state: dict[str, list[torch.Tensor]]
    step: torch.Tensor


def trial_views(
    params: Sequence[torch.Tensor], states: list[State], t: torch.Tensor, trial: int
) -> TrialViews:
    grads = [p.grad[trial] for p in params if p.grad is not None]  # (the caller's step's)
    names = states[0].keys() if states else ()
    return TrialViews(
        [p[trial] for p in params], grads, {k: [st[k][trial] for st in states] for k in names}, t[trial]
    )


def _decay_parts(tv: TrialViews, wd: float, decayed: list[bool] | None) -> list[tuple[TrialViews, float]]:
    """One trial's kernel calls: (its tensors, wd) where all of them decay alike, else the
    decayed tensors with wd and the others with none (two calls)."""
    if not wd or decayed is None or all(decayed):
        return [(tv, wd)]

    def part(keep: bool) -> TrialViews:
        idx = [i for i, d in enumerate(decayed) if d == keep]
        pick = [tv.params[i] for i in idx], [tv.grads[i] for i in idx]
        return TrialViews(*pick, {k: [v[i] for i in idx] for k, v in tv.state.items()}, tv.step)

    return [(part(True), wd), (part(False), 0.0)]


class _SGD(Update):
    trial_kernel = True

    def state_names(self, o: OptimizerSpec) -> tuple[str, ...]:
        return ("buf",) if o.momentum > 0 else ()

    def update(
        self,
        p: torch.Tensor,
        g: torch.Tensor,
        st: State,
        o: OptimizerSpec,
        lr: Lr,
        t: Any,
        scratch: Scratch = None,
    ) -> None:
        if o.momentum > 0:
            buf = st["buf"].mul_(o.momentum).add_(g)
            if o.nesterov:
                g = (
                    torch.add(g, buf, alpha=o.momentum, out=scratch)
                    if scratch is not None
                    else g + o.momentum * buf
                )
            else:
                g = buf
        _descend(p, g, lr)

    def kernel(self, tv: TrialViews, o: OptimizerSpec, lr: float, weight_decay: float) -> None:
        # a zero buffer with is_first_step False is torch's first step (buf = g), as update's
        torch._fused_sgd_(
            tv.params,
            tv.grads,
            tv.state.get("buf", []),
            weight_decay=weight_decay,
            momentum=o.momentum,
            lr=lr,
            dampening=0.0,
            nesterov=o.nesterov,
            maximize=False,
            is_first_step=False,
        )

    def torch_optimizer(
        self, groups: list[dict[str, Any]], o: OptimizerSpec, device: torch.device
    ) -> torch.optim.Optimizer:
        fast = _fast(device, capturable=False)  # SGD has no step count to capture
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, **fast)


class _Adam(Update):
    trial_kernel = True

    def state_names(self, o: OptimizerSpec) -> tuple[str, ...]:
        return ("m", "v")

    def update(
        self,
        p: torch.Tensor,
        g: torch.Tensor,
        st: State,
        o: OptimizerSpec,
        lr: Lr,
        t: Any,
        scratch: Scratch = None,
    ) -> None:
        self.apply(p, g, st, o, *self.per_step(o, lr, t), scratch)

    def per_step(self, o: OptimizerSpec, lr: Lr, t: Any) -> tuple[Lr, Lr]:
        """(step size lr / (1 − β₁ᵗ), √(1 − β₂ᵗ)): the bias corrections in double, then in
        float, as torch computes them."""
        b1, b2 = o.betas
        bc1, bc2_sqrt = 1 - b1**t, (1 - b2**t) ** 0.5
        step = lr / bc1 if not isinstance(lr, torch.Tensor) else (lr.double() / bc1).float()
        if isinstance(bc2_sqrt, torch.Tensor):
            bc2_sqrt = bc2_sqrt.float()
        return step, bc2_sqrt

    def apply(
        self, p: torch.Tensor, g: torch.Tensor, st: State, o: OptimizerSpec, a: Any, b: Any, scratch: Scratch
    ) -> None:
        step, bc2_sqrt, (b1, b2) = a, b, o.betas
        st["m"].lerp_(g, 1 - b1)
        st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = torch.sqrt(st["v"], out=scratch) if scratch is not None else st["v"].sqrt()
        denom.div_(bc2_sqrt).add_(o.eps)
        _descend(p, torch.div(st["m"], denom, out=denom), step)

    def kernel(self, tv: TrialViews, o: OptimizerSpec, lr: float, weight_decay: float) -> None:
        torch._fused_adam_(
            tv.params,
            tv.grads,
            tv.state["m"],
            tv.state["v"],
            [],
            [tv.step] * len(tv.params),
            lr=lr,
            beta1=o.betas[0],
            beta2=o.betas[1],
            weight_decay=weight_decay,
            eps=o.eps,
            amsgrad=False,
            maximize=False,
        )

    def torch_optimizer(
        self, groups: list[dict[str, Any]], o: OptimizerSpec, device: torch.device
    ) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        return cls(groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, **_fast(device))


class _RMSprop(Update):
    ALPHA = 0.99  # torch's default, which the spec does not expose

    def state_names(self, o: OptimizerSpec) -> tuple[str, ...]:
        return ("v", "buf") if o.momentum > 0 else ("v",)

    def update(
        self,
        p: torch.Tensor,
        g: torch.Tensor,
        st: State,
        o: OptimizerSpec,
        lr: Lr,
        t: Any,
        scratch: Scratch = None,
    ) -> None:
        st["v"].mul_(self.ALPHA).addcmul_(g, g, value=1 - self.ALPHA)
        avg = (torch.sqrt(st["v"], out=scratch) if scratch is not None else st["v"].sqrt()).add_(o.eps)
        if o.momentum > 0:
            st["buf"].mul_(o.momentum).addcdiv_(g, avg)
            _descend(p, st["buf"], lr)
        else:
            _descend(p, torch.div(g, avg, out=avg), lr)

    def torch_optimizer(
        self, groups: list[dict[str, Any]], o: OptimizerSpec, device: torch.device
    ) -> torch.optim.Optimizer:
        fast = {"foreach": True, **({"capturable": True} if device.type == "cuda" else {})}
        return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum, eps=o.eps, **fast)


def _descend(p: torch.Tensor, d: torch.Tensor, lr: Lr) -> None:
    """p ← p − lr·d in one pass (lr a float, or per trial along p's trial axis)."""
    if isinstance(lr, torch.Tensor):
        p.addcmul_(d, lr, value=-1)
    else:
        p.add_(d, alpha=-lr)


UPDATES: dict[str, Update] = {
    "sgd": _SGD("sgd"),
    "adam": _Adam("adam"),
    "adamw": _Adam("adamw", decoupled=True),
    "rmsprop": _RMSprop("rmsprop"),
}


def lr_factor(o: OptimizerSpec, epochs: int, epoch: int) -> float:
    """The schedule's multiplier of the base lr for `epoch` (1-based); a cosine schedule's is
    the share of (lr − eta_min) kept (its closed form)."""
    s = o.scheduler
    if isinstance(s, StepScheduler):
        return s.gamma ** ((epoch - 1) // s.step_size)
    if isinstance(s, CosineScheduler):
        t_max = s.t_max or epochs
        return 0.5 * (1 + math.cos(math.pi * min(epoch - 1, t_max) / t_max))
    return 1.0


def scheduled_lr(o: OptimizerSpec, epochs: int, epoch: int, base_lr: float) -> float:
    """The learning rate of `epoch` (1-based) for a trial whose base lr is `base_lr`."""
    f = lr_factor(o, epochs, epoch)
    if isinstance(o.scheduler, CosineScheduler):
        return o.scheduler.eta_min + (base_lr - o.scheduler.eta_min) * f
    return base_lr * f
