"""The problems of bench/peers.py, and the one split every contestant trains on.

- `digits`: scikit-learn's load_digits (1,797 rows, 64 features, 10 classes), MLP 64-128-10.
- `mnist784`: 5,000 rows of 784 features in 10 classes, shaped like the tutorial's MNIST and
  generated here (no copy of MNIST is at hand offline): 28×28 "images" in [0, 1], each its
  class's smooth random prototype blended with another class's (weight up to 0.5), shifted by up
  to 3 pixels, scaled in contrast and noised (σ 0.4). An MLP 784-128-10 reaches about 93%
  validation accuracy (Adam, lr 1e-3): neither trivial nor at chance, and the blends and shifts
  leave the hyper-parameters something to matter for. Deterministic (seed 0).

The split is regtrain's default (service/contract/spec.py SplitSpec: validation 0.2, test 0.2,
seed 0), written as a user of scikit-learn writes it: the test rows first (stratified, seed 0),
then the validation rows from the rest (a quarter of it, stratified, seed 1), each part sorted.
worker/training/data.py draws the same indices, so regtrain's sweep and the peers see the same rows.
Features are standardized on the train rows (on train + validation for the retrain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PROBLEMS = ("digits", "mnist784")
VALIDATION, TEST, SEED = 0.2, 0.2, 0


@dataclass(frozen=True)
class Problem:
    name: str
    X: np.ndarray  # float32, rows × features
    y: np.ndarray  # int64 class labels 0..K-1
    hidden: int = 128

    @property
    def features(self) -> int:
        return int(self.X.shape[1])

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1


@dataclass(frozen=True)
class Split:
    """Standardized arrays: train/val for the search, train+val/test for the retrain."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_full: np.ndarray  # train + validation, standardized on itself
    y_full: np.ndarray
    X_test: np.ndarray  # standardized on train + validation, as the retrain sees it
    y_test: np.ndarray


def problem(name: str, rows: int = 5_000) -> Problem:
    if name == "digits":
        d = load_digits()
        return Problem("digits", d.data.astype(np.float32), d.target.astype(np.int64))
    if name == "mnist784":
        X, y = _mnist_like(rows)
        return Problem("mnist784", X, y)
    raise ValueError(f"problem is one of {', '.join(PROBLEMS)}; got {name!r}")


SIDE = 28


def _smooth(a: np.ndarray, k: int = 4) -> np.ndarray:
    """A (2k+1)-wide box blur along both axes, wrapping at the edges."""
    for axis in (0, 1):
        pad = [(k, k) if i == axis else (0, 0) for i in range(2)]
        c = np.cumsum(np.pad(a, pad, mode="wrap"), axis=axis)
        n = c.shape[axis]
        a = (np.take(c, range(2 * k, n), axis=axis) - np.take(c, range(n - 2 * k), axis=axis)) / (2 * k)
    return a


def _prototypes(rng: np.random.Generator, classes: int) -> np.ndarray:
    out = []
    for _ in range(classes):
        a = _smooth(rng.normal(size=(SIDE, SIDE)))
        out.append(1 / (1 + np.exp(-3 * (a - a.mean()) / a.std())))
    return np.stack(out)


def _mnist_like(
    rows: int, classes: int = 10, noise: float = 0.4, blend: float = 0.5, shift: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    protos = _prototypes(rng, classes)
    y = rng.permutation(np.arange(rows) % classes)
    other = (y + rng.integers(1, classes, rows)) % classes
    w = rng.uniform(0, blend, rows)[:, None, None]
    base = (1 - w) * protos[y] + w * protos[other]
    dx, dy = rng.integers(-shift, shift + 1, rows), rng.integers(-shift, shift + 1, rows)
    X = np.stack([np.roll(b, (a, c), axis=(0, 1)) for b, a, c in zip(base, dx, dy, strict=True)])
    X = X * rng.uniform(0.7, 1.3, (rows, 1, 1)) + rng.normal(0, noise, X.shape)
    return np.clip(X, 0, 1).reshape(rows, -1).astype(np.float32), y.astype(np.int64)


def _take(idx: np.ndarray, y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = train_test_split(idx, test_size=math.ceil(frac * len(idx)), random_state=seed, stratify=y)
    return np.sort(a), np.sort(b)


def indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices, as regtrain's default split draws them."""
    rest, test = _take(np.arange(len(y)), y, TEST, SEED)
    train, val = _take(rest, y[rest], VALIDATION / (1 - TEST), SEED + 1)
    return train, val, test


def _standardize(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = fit.mean(0), fit.std(0)
    std[std == 0] = 1.0  # a constant feature (digits' blank corners) passes through centred
    return [((a - mean) / std).astype(np.float32) for a in (fit, *others)]


def split(p: Problem) -> Split:
    train, val, test = indices(p.y)
    X_train, X_val = _standardize(p.X[train], p.X[val])
    full = np.sort(np.concatenate([train, val]))
    X_full, X_test = _standardize(p.X[full], p.X[test])
    return Split(X_train, p.y[train], X_val, p.y[val], X_full, p.y[full], X_test, p.y[test])


def npz_bytes(p: Problem) -> bytes:
    """The problem as the NPZ file a user uploads (arrays X and y)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, X=p.X, y=p.y)
    return buf.getvalue()


def train_flops_per_epoch(p: Problem, train_rows: int) -> float:
    """One trial-epoch's arithmetic: forward and backward ≈ 3× the forward matmuls, 2 FLOPs
    per multiply-add, over the train rows (MLP features-hidden-classes)."""
    return 3 * 2 * train_rows * (p.features * p.hidden + p.hidden * p.classes)
