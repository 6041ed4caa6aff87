"""Datasets: load, split (seeded, stratified), encode columns and standardize on the train split only.

Everything stays in numpy here; the loop moves the arrays to the device once as tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets as skdatasets
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from service.contract.architecture import DataShape, Task, wants_images
from service.contract.dataset_kinds import kind_of
from service.contract.spec import (
    BuiltinDataset,
    JobSpec,
    SyntheticDataset,
    UploadedDataset,
    UriDataset,
)
from service.data import columns as feature_columns
from service.data.datafile import DataError, ParsedDataset, load_canonical

_BUILTIN_LOADERS = {
    "digits": skdatasets.load_digits,
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "breast_cancer": skdatasets.load_breast_cancer,
    "diabetes": skdatasets.load_diabetes,
}


@dataclass
class Standardization:
    """Fitted on the train split; the same transform must be applied to inputs at predict time."""

    mean: np.ndarray  # per feature (tabular) or per channel (images)
    std: np.ndarray
    target_mean: float = 0.0  # regression targets are standardized too, metrics reported in raw units
    target_std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.astype(float).ravel().tolist(),
            "std": self.std.astype(float).ravel().tolist(),
            "shape": list(self.mean.shape),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardization:
        shape = tuple(d["shape"])
        return cls(
            np.asarray(d["mean"], dtype=np.float32).reshape(shape),
            np.asarray(d["std"], dtype=np.float32).reshape(shape),
            float(d["target_mean"]),
            float(d["target_std"]),
        )

    def apply(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.std).astype(np.float32)


@dataclass
class Prepared:
    """Split and standardized data, ready for the device."""

    shape: DataShape
    input_shape: tuple[int, ...]  # one sample as the model sees it: (F,) or (C, H, W)
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    standardization: Standardization
    sha256: str
    classes: list[Any] = field(default_factory=list)  # labels with their type: int, float, bool or str
    # The column preprocessing fitted on the train split (service.data.columns' JSON), applied
    # before the standardization; None for data whose columns are its features (NPZ, built-in).
    preprocessing: dict[str, Any] | None = None
    # A text dataset (a text model on a file with a text column): the tokenizer fitted on the
    # train split (worker.training.text's JSON, kept in the sidecar as `text`). X is then int64
    # token ids N×T (0 the padding, after each row's tokens), never standardized.
    text: dict[str, Any] | None = None

    @property
    def task(self) -> Task:
        return self.shape.task


# How a worker reads each kind of dataset, by its kind's tag (what the other rooms ask of a kind
# is service.contract.dataset_kinds): a new kind registers its loader here.
Loader = Callable[[Any, Path | None, Path | None], ParsedDataset]
LOADERS: dict[str, Loader] = {}


def loads(tag: str) -> Callable[[Loader], Loader]:
    def register(load: Loader) -> Loader:
        LOADERS[tag] = load
        return load

    return register


def load_dataset(spec: JobSpec, datasets_dir: Path | None, dataset_file: Path | None = None) -> ParsedDataset:
    """The raw dataset a spec names; DataError with a reason when it cannot be had. A dataset
    by URI is read from `dataset_file`, the canonical file the worker made of the fetched object
    (the engine itself fetches nothing); an upload from `dataset_file` when the caller gives
    one (the worker's held copy), else from `datasets_dir`."""
    tag = kind_of(spec.dataset).tag
    if tag not in LOADERS:
        raise DataError(f"dataset: this worker has no loader for datasets of kind {tag!r}")
    return LOADERS[tag](spec.dataset, datasets_dir, dataset_file)


@loads("uri")
def _load_uri(ds: UriDataset, datasets_dir: Path | None, dataset_file: Path | None) -> ParsedDataset:
    if dataset_file is None:
        raise DataError("dataset.uri: the worker has not fetched this dataset")
    return load_canonical(dataset_file)


@loads("builtin")
def _load_builtin(ds: BuiltinDataset, datasets_dir: Path | None, dataset_file: Path | None) -> ParsedDataset:
    bunch = _BUILTIN_LOADERS[ds.name]()
    X = np.asarray(bunch.data, dtype=np.float32)
    if ds.name == "digits":
        X = X.reshape(-1, 1, 8, 8)
    if ds.name == "diabetes":
        return ParsedDataset(X, np.asarray(bunch.target, np.float32), "regression", np.array([], dtype=str))
    names = np.asarray(bunch.target_names)  # digits: the ints 0-9; iris: strings
    return ParsedDataset(X, np.asarray(bunch.target, np.int64), "classification", names)


@loads("synthetic")
def _load_synthetic(
    ds: SyntheticDataset, datasets_dir: Path | None, dataset_file: Path | None
) -> ParsedDataset:
    return _synthetic(ds)


@loads("uploaded")
def _load_upload(ds: UploadedDataset, datasets_dir: Path | None, dataset_file: Path | None) -> ParsedDataset:
    if dataset_file is not None:
        return load_canonical(dataset_file)
    if datasets_dir is None:
        raise DataError(f"dataset {ds.id!r}: no dataset folder is configured")
    return load_canonical(datasets_dir / f"{ds.id}.npz")


def _synthetic(ds: SyntheticDataset) -> ParsedDataset:
    if ds.task == "regression":
        X, y = skdatasets.make_regression(
            n_samples=ds.n_samples,
            n_features=ds.n_features,
            n_informative=max(1, ds.n_features // 2),
            random_state=ds.seed,
        )
        # noise is a fraction of the target's spread, so its meaning does not depend on scale
        rng = np.random.default_rng(ds.seed + 1)
        y = y + ds.noise * (y.std() or 1.0) * rng.standard_normal(len(y))
        return ParsedDataset(
            X.astype(np.float32), y.astype(np.float32), "regression", np.array([], dtype=str)
        )
    need = math.ceil(math.log2(ds.n_classes))
    if ds.n_features < need:
        raise DataError(f"dataset.n_features: {ds.n_classes} classes need at least {need} features")
    informative = min(ds.n_features, max(need + 1, ds.n_features // 2))
    X, y = skdatasets.make_classification(
        n_samples=ds.n_samples,
        n_features=ds.n_features,
        n_informative=informative,
        n_redundant=min(ds.n_features - informative, informative // 4),
        n_classes=ds.n_classes,
        n_clusters_per_class=1,
        flip_y=ds.noise,
        random_state=ds.seed,
    )
    return ParsedDataset(
        X.astype(np.float32),
        y.astype(np.int64),
        "classification",
        np.arange(ds.n_classes, dtype=np.int64),
    )


def prepare(spec: JobSpec, datasets_dir: Path | None = None, dataset_file: Path | None = None) -> Prepared:
    """Load, split and standardize the data of a spec."""
    return split_and_standardize(spec, load_dataset(spec, datasets_dir, dataset_file))


def _arrays(spec: JobSpec, data: ParsedDataset) -> tuple[np.ndarray, np.ndarray]:
    X, y = data.X, data.y
    images = wants_images(spec)
    if data.lengths is not None:  # frames N×T×F: a sequence model reads them (its planner checks)
        if images:
            raise DataError("the model needs image data (N, C, H, W); this dataset holds sequences of frames")
    elif images and X.ndim != 4:
        raise DataError("the model needs image data (N, C, H, W); this dataset is tabular")
    elif not images:
        X = X.reshape(len(X), -1)
    if data.task == "classification" and len(np.unique(y)) < 2:
        raise DataError("the target has a single class: nothing to learn")
    return X, y


def split_and_standardize(spec: JobSpec, data: ParsedDataset) -> Prepared:
    X, y = _arrays(spec, data)
    s = spec.split
    strat = y if data.task == "classification" else None
    train_idx, val_idx, test_idx = _split(np.arange(len(X)), strat, s.validation, s.test, s.seed)
    return _assemble(data, X, y, train_idx, val_idx, test_idx, column_plan(spec, data))


def cv_folds(spec: JobSpec, data: ParsedDataset, k: int) -> list[Prepared]:
    """k folds of the data left after the test split (stratified for classification); fold i
    validates on its k-th and trains on the rest, standardized on its own train part."""
    X, y = _arrays(spec, data)
    s = spec.split
    classification = data.task == "classification"
    idx = np.arange(len(X))
    rest, test_idx = (
        _take(idx, y if classification else None, s.test, s.seed) if s.test > 0 else (idx, idx[:0])
    )
    if len(rest) < 2 * k:
        raise DataError(f"too few samples ({len(rest)}) for {k}-fold cross validation")
    splitter: Any = (
        StratifiedKFold(k, shuffle=True, random_state=s.seed)
        if classification
        else KFold(k, shuffle=True, random_state=s.seed)
    )
    try:
        pairs = list(splitter.split(rest, y[rest] if classification else None))
    except ValueError:  # a class rarer than k: plain folds
        pairs = list(KFold(k, shuffle=True, random_state=s.seed).split(rest))
    planned = column_plan(spec, data)
    return [
        _assemble(data, X, y, np.sort(rest[tr]), np.sort(rest[va]), test_idx, planned) for tr, va in pairs
    ]


def column_plan(spec: JobSpec, data: ParsedDataset) -> list[feature_columns.Planned] | None:
    """How each raw column of a CSV or Parquet dataset becomes features (the spec's
    `dataset.columns`, else inferred); None for data whose columns are its features."""
    declared = getattr(spec.dataset, "columns", "auto")
    if data.columns is None:
        if declared != "auto":
            raise DataError("dataset.columns: only a CSV or Parquet dataset has columns to declare")
        return None
    try:  # the encoded width was checked against the server's limits at submit (or by check_shape)
        return feature_columns.plan(
            data.columns,
            None if declared == "auto" else declared,
            max_features=2**31,
            text_model=feature_columns.takes_text(spec.model),
        )
    except feature_columns.ColumnsError as e:
        raise DataError(f"dataset.columns: {e}") from None


def _assemble(
    data: ParsedDataset,
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    planned: list[feature_columns.Planned] | None = None,
) -> Prepared:
    classification = data.task == "classification"
    if len(train_idx) < 2:
        raise DataError(f"too few samples ({len(X)}) for the split: the train split would be empty")
    if classification and len(np.unique(y[train_idx])) < 2:
        raise DataError("the train split holds a single class: too few samples for the split")

    text_name = feature_columns.text_column(planned) if planned is not None else None
    if text_name is not None:
        return _assemble_text(data, text_name, y, train_idx, val_idx, test_idx)
    preprocessing = None
    if planned is not None:
        # Fitted on the train rows only, like the standardization below: a category only the
        # validation or test rows hold is "other" for them, as it would be for a new row.
        assert data.columns is not None
        preprocessing = feature_columns.fit(planned, data.columns, X[train_idx])
        X = feature_columns.transform(preprocessing, data.columns, X)
    Xtr = X[train_idx]
    if data.lengths is not None:  # frames: per feature, over the train split's real frames only
        real = Xtr[np.arange(X.shape[1])[None, :] < data.lengths[train_idx][:, None]]
        mean, std = real.mean(axis=0, keepdims=True), real.std(axis=0, keepdims=True)
    else:
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        mean = Xtr.mean(axis=axes, keepdims=True)[0]
        std = Xtr.std(axis=axes, keepdims=True)[0]
    std[std < 1e-8] = 1.0  # constant features (blank pixels) pass through unscaled
    st = Standardization(mean.astype(np.float32), std.astype(np.float32))
    scale = _frames_scaler(st, data.lengths) if data.lengths is not None else lambda x, _: st.apply(x)
    ys = _targets(st, y, train_idx, classification)

    shape = DataShape.of(data.task, X.shape[1:], len(data.classes), len(X))
    return Prepared(
        shape=shape,
        input_shape=tuple(int(v) for v in X.shape[1:]),
        X_train=scale(Xtr, train_idx),
        y_train=ys(train_idx),
        X_val=scale(X[val_idx], val_idx),
        y_val=ys(val_idx),
        X_test=scale(X[test_idx], test_idx),
        y_test=ys(test_idx),
        standardization=st,
        sha256=data.sha256(),
        classes=data.classes.tolist(),
        preprocessing=preprocessing,
    )


def _targets(
    st: Standardization, y: np.ndarray, train_idx: np.ndarray, classification: bool
) -> Callable[[np.ndarray], np.ndarray]:
    """The targets of some rows as the engine trains on them: class indices, or regression
    targets standardized by the train split's mean and std (kept in `st` for predict)."""
    if not classification:
        st.target_mean = float(y[train_idx].mean())
        st.target_std = float(y[train_idx].std()) or 1.0

    def ys(i: np.ndarray) -> np.ndarray:
        if classification:
            return y[i].astype(np.int64)
        return ((y[i] - st.target_mean) / st.target_std).astype(np.float32)

    return ys


def _frames_scaler(
    st: Standardization, lengths: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Standardize frames and keep their padding zero: a sequence model takes the trailing
    all-zero frames of a sequence as its padding (sequence_models.SequenceInput), so each
    sequence's length travels with its frames, through the loop, predict and exports alike."""

    def scale(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = st.apply(X)
        out[np.arange(X.shape[1])[None, :] >= lengths[idx][:, None]] = 0
        return out

    return scale


def _assemble_text(
    data: ParsedDataset,
    name: str,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
) -> Prepared:
    """A text dataset: the vocabulary learned on the train rows only (a word only validation or
    test rows hold is [UNK] for them, as for a new row), every row as token ids."""
    from worker.training import text  # tokenizers: a text job's only

    assert data.columns is not None
    j = [c["name"] for c in data.columns].index(name)
    values = data.text_values(j)
    encoder = text.fit(name, [values[i] for i in train_idx])
    X, _ = encoder.encode(values)
    classification = data.task == "classification"
    t = encoder.max_length
    st = Standardization(np.zeros(t, np.float32), np.ones(t, np.float32))  # ids are not scaled
    ys = _targets(st, y, train_idx, classification)

    return Prepared(
        shape=text_shape(data.task, len(data.classes), len(X), t, encoder.vocab_size),
        input_shape=(t,),
        X_train=X[train_idx],
        y_train=ys(train_idx),
        X_val=X[val_idx],
        y_val=ys(val_idx),
        X_test=X[test_idx],
        y_test=ys(test_idx),
        standardization=st,
        sha256=data.sha256(),
        classes=data.classes.tolist(),
        text=encoder.to_dict(),
    )


def text_shape(task: Task, n_classes: int, n_samples: int | None, length: int, vocab_size: int) -> DataShape:
    """Token ids: T steps of one id each, from a vocabulary of `vocab_size` (0 the padding)."""
    base = DataShape.of(task, (length,), n_classes, n_samples)
    return replace(base, sequence=(length, 1), vocab_size=vocab_size)


def _split(
    idx: np.ndarray, y: np.ndarray | None, val: float, test: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.array([], dtype=np.int64)
    rest, test_idx = _take(idx, y, test, seed) if test > 0 else (idx, empty)
    if val <= 0:
        return rest, empty, test_idx
    # val is a fraction of the whole dataset, not of what the test split left
    train_idx, val_idx = _take(rest, None if y is None else y[rest], val / (1 - test), seed + 1)
    return train_idx, val_idx, test_idx


def _take(idx: np.ndarray, y: np.ndarray | None, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_take = math.ceil(frac * len(idx))
    if n_take < 1 or n_take >= len(idx):
        raise DataError(f"too few samples ({len(idx)}) for the split")
    try:
        a, b = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y)
    except ValueError:
        # a class too rare to stratify (fewer members than splits): split at random instead
        a, b = train_test_split(idx, test_size=n_take, random_state=seed)
    return np.sort(a), np.sort(b)
