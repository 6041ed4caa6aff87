"""The training loop the peers' scripts run, written the way a PyTorch user writes it: a
DataLoader over a TensorDataset, an nn.Sequential MLP with dropout, torch.optim.Adam, L1 and L2
(λ·Σ|w| and λ·Σw² over the weight matrices) added to the loss, validation accuracy after each
epoch. The Optuna script and the Ray Tune trainable both call `train`; each retrains its best
with `retrain_and_test`.

The space (bench/search.py's, the one regtrain's sweep is given): l1, l2 and lr on log scales,
dropout uniform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.peers_data import Split

BATCH = 64
# bench/search.py's SPACE, by the names regtrain's sweep gives them
SPACE: dict[str, tuple[str, float, float]] = {
    "regularization.l1": ("log", 1e-7, 1e-5),
    "regularization.l2": ("log", 1e-6, 1e-3),
    "model.dropout": ("uniform", 0.0, 0.3),
    "optimizer.lr": ("log", 3e-4, 1e-2),
}


@dataclass(frozen=True)
class Params:
    l1: float
    l2: float
    dropout: float
    lr: float

    @classmethod
    def of(cls, values: dict[str, Any]) -> Params:
        """From a dict keyed by SPACE's names (as the samplers return them)."""
        return cls(
            l1=float(values["regularization.l1"]),
            l2=float(values["regularization.l2"]),
            dropout=float(values["model.dropout"]),
            lr=float(values["optimizer.lr"]),
        )


def _model(features: int, hidden: int, classes: int, dropout: float) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


def _fit(
    X: np.ndarray,
    y: np.ndarray,
    params: Params,
    epochs: int,
    hidden: int,
    after_epoch: Callable[[Any, int], bool],
    seed: int = 0,
) -> Any:
    """Train; after_epoch(model, epoch) → False stops. The model at the end."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model = _model(X.shape[1], hidden, int(y.max()) + 1, params.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=BATCH, shuffle=True
    )
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    for epoch in range(1, epochs + 1):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss = loss + params.l1 * sum(w.abs().sum() for w in weights)
            loss = loss + params.l2 * sum(w.pow(2).sum() for w in weights)
            loss.backward()
            opt.step()
        if not after_epoch(model, epoch):
            break
    return model


def accuracy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(X)).argmax(1) == torch.from_numpy(y)).float().mean())


def train(
    data: Split, params: Params, epochs: int, hidden: int, report: Callable[[int, float], bool]
) -> tuple[float, int]:
    """One trial on the train rows: report(epoch, val_accuracy) after each epoch, False to stop
    (pruned). (the last epoch's val_accuracy, epochs trained)."""
    last = [0.0, 0]

    def after(model: Any, epoch: int) -> bool:
        last[:] = [accuracy(model, data.X_val, data.y_val), epoch]
        return report(epoch, last[0])

    _fit(data.X_train, data.y_train, params, epochs, hidden, after)
    return float(last[0]), int(last[1])


def retrain_and_test(data: Split, params: Params, epochs: int, hidden: int) -> float:
    """The winner trained on train + validation rows for every epoch; its test accuracy."""
    model = _fit(data.X_full, data.y_full, params, epochs, hidden, lambda _m, _e: True)
    return accuracy(model, data.X_test, data.y_test)
