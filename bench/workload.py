"""The tutorial's workload, shared by the benchmarks: 60,000 synthetic samples of 784 features
in 10 classes (y = argmax of a random linear map, as the anchors draw them) and the MLP
784-128-10 with dropout 0.5, L1 1e-5 + L2 1e-4, SGD lr 0.01."""

from __future__ import annotations

from typing import Any

import numpy as np

N, D, K, H = 60_000, 784, 10, 128
L1, L2, LR = 1e-5, 1e-4, 0.01


def tensors() -> tuple[Any, Any]:
    """(X, y) as CPU tensors, the same every call."""
    import torch

    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    return X, (X @ torch.randn(D, K, generator=g)).argmax(1)


def prepared() -> Any:
    """The data as the engine takes it: all of it to train on, no validation or test split."""
    from service.contract.architecture import DataShape
    from worker.training.data import Prepared, Standardization

    X, y = tensors()
    empty = np.zeros((0, D), np.float32)
    return Prepared(
        shape=DataShape("classification", D, K),
        input_shape=(D,),
        X_train=X.numpy(),
        y_train=y.numpy(),
        X_val=empty,
        y_val=np.zeros(0, np.int64),
        X_test=empty,
        y_test=np.zeros(0, np.int64),
        standardization=Standardization(np.zeros(D, np.float32), np.ones(D, np.float32)),
        sha256="bench",
        classes=[str(i) for i in range(K)],
    )


def spec(batch: int, device: str, epochs: int, **regularization: float) -> Any:
    """The tutorial's JobSpec; regularization overrides l1/l2."""
    from service.contract.spec import JobSpec

    return JobSpec.model_validate(
        {
            "dataset": {"name": "synthetic", "n_samples": N, "n_features": D, "n_classes": K},
            "split": {"validation": 0.0, "test": 0.0},
            "model": {"type": "mlp", "hidden": [H], "dropout": 0.5},
            "regularization": {"l1": L1, "l2": L2, **regularization},
            "optimizer": {"name": "sgd", "lr": LR},
            "training": {"epochs": epochs, "batch_size": batch, "device": device, "checkpoint_every": 0},
        }
    )
