"""Optimizers and schedulers. weight_decay keeps PyTorch's meaning and the regularization scope:
two parameter groups, the tensors in scope decayed, the rest not."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from service.contract.spec import CosineScheduler, JobSpec, PlateauScheduler, StepScheduler

Scheduler = LRScheduler | ReduceLROnPlateau


def folds_l2(spec: JobSpec) -> bool:
    """Whether L2's gradient 2λ₂w can ride in the optimizer's coupled weight decay: true for sgd,
    adam and rmsprop (g += wd·w before anything else), false for adamw (decoupled) and when
    gradients are clipped (the penalty's gradient must be clipped with the data's)."""
    return spec.optimizer.name != "adamw" and spec.training.grad_clip_norm is None


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
    # fused kernels on CUDA (one launch for all tensors), capturable so that the step can be
    # replayed from a CUDA graph; foreach on CPU
    cuda = device.type == "cuda"
    fast: dict[str, bool] = {"fused": True} if cuda else {"foreach": True}
    capturable = {"capturable": True} if cuda else {}
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, **fast)
    if o.name == "adam":
        return torch.optim.Adam(
            groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, **fast, **capturable
        )
    if o.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, **fast, **capturable
        )
    return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum, eps=o.eps, foreach=True, **capturable)


def create_scheduler(spec: JobSpec, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    s = spec.optimizer.scheduler
    if isinstance(s, StepScheduler):
        return StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if isinstance(s, CosineScheduler):
        return CosineAnnealingLR(optimizer, T_max=s.t_max or spec.training.epochs, eta_min=s.eta_min)
    if isinstance(s, PlateauScheduler):
        return ReduceLROnPlateau(optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    return None
