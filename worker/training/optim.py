"""The solo loop's optimizer and scheduler. The optimizer is the torch face of the registry's
entry (worker.training.updates.UPDATES); weight_decay keeps PyTorch's meaning and the
regularization scope: two parameter groups, the tensors in scope decayed, the rest not."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from service.contract.spec import CosineScheduler, JobSpec, PlateauScheduler, StepScheduler
from worker.training.updates import UPDATES

Scheduler = LRScheduler | ReduceLROnPlateau


def folds_l2(spec: JobSpec) -> bool:
    """Whether L2's gradient 2λ₂w can ride in the optimizer's coupled weight decay: true for sgd,
    adam and rmsprop (g += wd·w before anything else), false for adamw (decoupled) and when
    gradients are clipped (the penalty's gradient must be clipped with the data's)."""
    return not UPDATES[spec.optimizer.name].decoupled and spec.training.grad_clip_norm is None


def create_optimizer(
    spec: JobSpec, in_scope: list[torch.Tensor], out_of_scope: list[torch.Tensor], device: torch.device
) -> torch.optim.Optimizer:
    o = spec.optimizer
    wd = o.weight_decay + (2 * spec.regularization.l2 if folds_l2(spec) else 0.0)
    groups = [
        {"params": in_scope, "weight_decay": wd},
        {"params": out_of_scope, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return UPDATES[o.name].torch_optimizer(groups, o, device)


def create_scheduler(spec: JobSpec, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    s = spec.optimizer.scheduler
    if isinstance(s, StepScheduler):
        return StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if isinstance(s, CosineScheduler):
        return CosineAnnealingLR(optimizer, T_max=s.t_max or spec.training.epochs, eta_min=s.eta_min)
    if isinstance(s, PlateauScheduler):
        return ReduceLROnPlateau(optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    return None


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """optimizer.step, or for a fused CPU Adam, AdamW or SGD the same step made straight into
    torch's fused kernel: Optimizer.step's wrappers, hooks and per-call grouping of tensors by
    device cost about 100 us a step in Python, where a 784-128-10 MLP's whole fused update
    takes 60 (a solo CPU step is 1.4 ms). The first step, and any step whose state is not
    there yet, goes through optimizer.step, which creates the state; the state stays the
    optimizer's own, so its state_dict (checkpoints, resumes) is torch's."""
    d = optimizer.defaults
    plain = d.get("fused") and not d.get("amsgrad") and not d.get("maximize") and not d.get("differentiable")
    on_cpu = all(p.device.type == "cpu" for g in optimizer.param_groups for p in g["params"])
    kind = type(optimizer)
    if not (plain and on_cpu and kind in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)):
        return optimizer.step

    stepped = False  # once through optimizer.step: an LR scheduler checks that it was called

    def step() -> None:
        nonlocal stepped
        groups = [[p for p in g["params"] if p.grad is not None] for g in optimizer.param_groups]
        state = optimizer.state
        if not stepped or any(
            not state.get(p) and (kind is not torch.optim.SGD or g["momentum"])
            for g, ps in zip(optimizer.param_groups, groups, strict=True)
            for p in ps
        ):
            optimizer.step()  # creates the state; torch's own first step
            stepped = True
            return
        for g, ps in zip(optimizer.param_groups, groups, strict=True):
            if not ps:
                continue
            grads = [p.grad for p in ps]
            if kind is torch.optim.SGD:
                bufs = [state[p]["momentum_buffer"] for p in ps] if g["momentum"] else []
                torch._fused_sgd_(ps, grads, bufs, weight_decay=g["weight_decay"], momentum=g["momentum"],
                                  lr=g["lr"], dampening=g["dampening"], nesterov=g["nesterov"],
                                  maximize=False, is_first_step=False)  # fmt: skip
                continue
            steps = [state[p]["step"] for p in ps]
            torch._foreach_add_(steps, 1)
            fused = torch._fused_adamw_ if kind is torch.optim.AdamW else torch._fused_adam_
            fused(ps, grads, [state[p]["exp_avg"] for p in ps], [state[p]["exp_avg_sq"] for p in ps], [],
                  steps, amsgrad=False, lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1],
                  weight_decay=g["weight_decay"], eps=g["eps"], maximize=False)  # fmt: skip

    return step
