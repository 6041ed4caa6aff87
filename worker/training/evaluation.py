"""A model's loss and task metrics on a split, in eval mode, a chunk at a time."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.contract.architecture import Task

EVAL_CHUNK = 8192


@torch.no_grad()
def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, task: Task, target_std: float, autocast: Any
) -> dict[str, float]:
    """Loss and task metrics in eval mode (no dropout, running batch-norm statistics).
    Regression errors are reported in the target's own units, the loss in standardized units."""
    model.eval()
    device = next(model.parameters()).device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    abs_err = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(0, len(X), EVAL_CHUNK):
        # a no-op for data on the device; a chunk at a time for data kept on the host
        xb = X[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        yb = y[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        with autocast:
            out = model(xb)
        out = out.float()
        if task == "classification":
            loss += nn.functional.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
        else:
            err = out.squeeze(-1) - yb
            loss += err.square().sum()
            abs_err += err.abs().sum()
    n = len(X)
    mean_loss = float(loss) / n
    if task == "classification":
        return {"loss": mean_loss, "accuracy": float(correct) / n}
    mse = mean_loss * target_std**2
    var = float(y.double().var(unbiased=False)) * target_std**2
    return {
        "loss": mean_loss,
        "mse": mse,
        "mae": float(abs_err) / n * target_std,
        "r2": 1 - mse / var if var > 0 else 0.0,
    }
