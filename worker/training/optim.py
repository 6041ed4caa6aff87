"""The solo loop's optimizer and scheduler. The optimizer is the torch face of the registry's
entry (worker.training.updates.UPDATES); weight_decay keeps PyTorch's meaning and the
regularization scope: two parameter groups, the tensors in scope decayed, the rest not."""

from __future__ import annotations

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
