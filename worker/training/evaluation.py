"""A model's loss and task metrics on a split, in eval mode, a chunk at a time; and, for a
classification test split, the per-class report a data scientist reads (precision, recall, F1,
support, macro F1 and the confusion matrix)."""

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


@torch.no_grad()
def confusion_matrix(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, n_classes: int, autocast: Any
) -> list[list[int]]:
    """counts[true][predicted] over the split, in eval mode, a chunk at a time."""
    model.eval()
    device = next(model.parameters()).device
    counts = torch.zeros(n_classes * n_classes, device=device, dtype=torch.int64)
    for i in range(0, len(X), EVAL_CHUNK):
        xb = X[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        yb = y[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        with autocast:
            pred = model(xb).float().argmax(1)
        counts += torch.bincount(yb * n_classes + pred, minlength=n_classes * n_classes)
    return counts.view(n_classes, n_classes).tolist()


def class_report(matrix: list[list[int]], classes: list[Any]) -> dict[str, Any]:
    """`per_class` ({label: precision, recall, f1, support}), `macro_f1` and `confusion_matrix`
    (rows true, columns predicted, both in `classes` order) from the matrix. A ratio over nothing
    (a class never predicted, or absent from the split) counts 0, as scikit-learn's
    zero_division=0 does; macro F1 averages every class, present or not, as scikit-learn does
    with `labels=` all classes. Labels are JSON object keys, so they are written as strings."""
    per_class: dict[str, dict[str, float | int]] = {}
    for k, label in enumerate(classes):
        tp = matrix[k][k]
        support = sum(matrix[k])
        predicted = sum(row[k] for row in matrix)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(label)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    macro = sum(c["f1"] for c in per_class.values()) / len(per_class) if per_class else 0.0
    return {"per_class": per_class, "macro_f1": macro, "confusion_matrix": matrix}
