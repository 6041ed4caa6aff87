"""Shapes and parameter counts of a spec's model, by arithmetic alone (no torch).

The API refuses a model that cannot be built on its data (a cnn on tabular data, a conv after
flatten) or that is too large, before a job is queued. The engine builds exactly the layers
walked here, and a test holds the two to the same parameter count.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from service.contract.errors import SpecError
from service.contract.spec import (
    CNNSpec,
    Conv2dLayer,
    JobSpec,
    LinearLayer,
    MaxPool2dLayer,
    MLPSpec,
    SequentialSpec,
)

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know of its data."""

    task: Task
    n_features: int
    n_outputs: int  # classes for classification, 1 for regression
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) where the data are images
    n_samples: int | None = None
    # (T, F) where each sample is a sequence of T steps of F values: frames of an NPZ whose X is
    # N×T×F, or text as T token ids (F = 1) when vocab_size is set. Sequence models read it;
    # n_features stays T·F so that row models and the memory estimates see the flat size.
    sequence: tuple[int, int] | None = None
    # Text: the vocabulary size V (ids 0..V-1, 0 the padding id) of token-id sequences, which
    # sequence models take through an nn.Embedding; None for frames and every other data.
    vocab_size: int | None = None

    @classmethod
    def of(
        cls, task: Task, sample_shape: Sequence[int], n_classes: int, n_samples: int | None = None
    ) -> DataShape:
        """The shape of data whose samples are `sample_shape`: (F,) rows, (T, F) sequences of
        frames, or (C, H, W) images."""
        dims = tuple(int(v) for v in sample_shape)
        image = (dims[0], dims[1], dims[2]) if len(dims) == 3 else None
        sequence = (dims[0], dims[1]) if len(dims) == 2 else None
        outputs = n_classes if task == "classification" else 1
        return cls(task, math.prod(dims), outputs, image, n_samples, sequence)

    def flat(self) -> DataShape:
        """The same data seen as flat rows (how a stacked MLP takes images or frames)."""
        return replace(self, image_shape=None, sequence=None, vocab_size=None)


BUILTIN_SHAPES: dict[str, DataShape] = {
    "digits": DataShape("classification", 64, 10, (1, 8, 8), 1797),
    "iris": DataShape("classification", 4, 3, None, 150),
    "wine": DataShape("classification", 13, 3, None, 178),
    "breast_cancer": DataShape("classification", 30, 2, None, 569),
    "diabetes": DataShape("regression", 10, 1, None, 442),
}


def known_shape(spec: JobSpec) -> DataShape | None:
    """The data shape of a built-in or synthetic dataset; None for an upload (ask the store)."""
    from service.contract.dataset_kinds import kind_of  # the kinds' module builds on this one

    return kind_of(spec.dataset).shape(spec.dataset)


@dataclass
class LayerPlan:
    """One layer of the model the engine builds, with its parameter count."""

    kind: str  # linear, conv2d, batch_norm1d, batch_norm2d, act, dropout, dropout2d, max_pool2d, flatten
    args: dict[str, int | float | str] = field(default_factory=dict)
    params: int = 0
    activations: int = 0  # output elements per sample


def _linear(n_in: int, n_out: int) -> LayerPlan:
    args: dict[str, int | float | str] = {"in": n_in, "out": n_out}
    return LayerPlan("linear", args, n_in * n_out + n_out, n_out)


def _conv(c_in: int, c_out: int, k: int, stride: int, pad: int, h: int, w: int) -> LayerPlan:
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    args: dict[str, int | float | str] = {
        "in": c_in,
        "out": c_out,
        "kernel": k,
        "stride": stride,
        "padding": pad,
        "h": ho,
        "w": wo,
    }
    return LayerPlan("conv2d", args, c_in * c_out * k * k + c_out, c_out * ho * wo)


def _mlp_tail(
    layers: list[LayerPlan], n_in: int, hidden: list[int], act: str, dropout: float, bn: bool, out: int
) -> None:
    for width in hidden:
        layers.append(_linear(n_in, width))
        if bn:
            layers.append(LayerPlan("batch_norm1d", {"n": width}, 2 * width, width))
        layers.append(LayerPlan("act", {"fn": act}, 0, width))
        if dropout > 0:
            layers.append(LayerPlan("dropout", {"p": dropout}, 0, width))
        n_in = width
    layers.append(_linear(n_in, out))


# --- model types: one registered planner per spec `type` ------------------------------------


@dataclass(frozen=True)
class ModelType:
    """What the API, the planner, the data loader, the stacker and the engine need to know of
    one model type: its config class (validation, OpenAPI), its planner (parameters, memory),
    and, for a type whose module is not a stack of planned layers, the dotted path of the
    factory that builds its nn.Module (resolved in workers only)."""

    spec: type[BaseModel]
    plan: Callable[[Any, DataShape], list[LayerPlan]]
    wants_images: Callable[[Any], bool]  # does it take (C, H, W) samples rather than flat rows
    not_stackable: Callable[[Any], str | None]  # why its trials train one by one (None: they stack)
    factory: str | None = None  # "package.module:function(config, shape) -> nn.Module"


MODEL_TYPES: dict[str, ModelType] = {}


def model_type(
    name: str,
    *,
    spec: type[BaseModel] | None = None,
    wants_images: Callable[[Any], bool] = lambda _: False,
    not_stackable: Callable[[Any], str | None] | None = None,
    factory: str | None = None,
) -> Callable[[Callable[[Any, DataShape], list[LayerPlan]]], Callable[[Any, DataShape], list[LayerPlan]]]:
    """Register the decorated planner and `spec` for models whose `type` is `name` (as timm
    registers models): the one way a model type enters, built-in or plugin
    (service.contract.model_plugins). `spec` defaults to the planner's first parameter's
    annotation. A type built by its own factory trains trial by trial unless it says
    otherwise: the stacked trainer stacks planned layers only."""
    if not_stackable is None:
        not_stackable = (lambda _: f"{name} models train trial by trial") if factory else (lambda _: None)
    why_not_stacked = not_stackable

    def register(
        plan: Callable[[Any, DataShape], list[LayerPlan]],
    ) -> Callable[[Any, DataShape], list[LayerPlan]]:
        config = spec or next(iter(typing.get_type_hints(plan).values()))
        MODEL_TYPES[name] = ModelType(config, plan, wants_images, why_not_stacked, factory)
        return plan

    return register


def model_type_of(name: str) -> ModelType:
    """The registered type `name` (loading the built-ins and plugins on first use)."""
    from service.contract.model_plugins import load_model_types

    load_model_types()
    return MODEL_TYPES[name]


def plan_model(spec: JobSpec, shape: DataShape) -> list[LayerPlan]:
    """The layers of the spec's model on data of this shape; SpecError if it cannot be built."""
    return model_type_of(spec.model.type).plan(spec.model, shape)


def wants_images(spec: JobSpec) -> bool:
    """Does the spec's model take image-shaped samples (the loader keeps (C, H, W))?"""
    return model_type_of(spec.model.type).wants_images(spec.model)


def _no_frames(shape: DataShape, what: str) -> None:
    """Sequences of frames are read by the sequence types only: flattening T×F frames into a row
    would lose their order and their lengths (a 422 at model.type, never a silent flatten)."""
    if shape.sequence is not None and shape.vocab_size is None:
        t, f = shape.sequence
        raise SpecError(
            ("model", "type"),
            f"{what} takes rows or images; this dataset holds sequences of frames ({t}×{f}): "
            "use a sequence model (rnn, transformer or conv1d)",
        )


def _is_spatial(m: SequentialSpec) -> bool:
    return any(isinstance(layer, Conv2dLayer | MaxPool2dLayer) for layer in m.layers)


@model_type(
    "mlp",
    spec=MLPSpec,
    not_stackable=lambda m: "batch_norm models train trial by trial" if m.batch_norm else None,
)
def _plan_mlp(m: MLPSpec, shape: DataShape) -> list[LayerPlan]:
    _no_frames(shape, "an mlp")
    layers: list[LayerPlan] = []
    _mlp_tail(layers, shape.n_features, m.hidden, m.activation, m.dropout, m.batch_norm, shape.n_outputs)
    return layers


@model_type(
    "cnn",
    spec=CNNSpec,
    wants_images=lambda _: True,
    not_stackable=lambda _: "cnn models train trial by trial",
)
def _plan_cnn(m: CNNSpec, shape: DataShape) -> list[LayerPlan]:
    _no_frames(shape, "a cnn")
    if shape.image_shape is None:
        raise SpecError(("model", "type"), "a cnn needs image data (such as digits); this dataset is tabular")
    layers: list[LayerPlan] = []
    c, h, w = shape.image_shape
    for i, ch in enumerate(m.channels):
        conv = _conv(c, ch, m.kernel_size, 1, m.kernel_size // 2, h, w)
        layers.append(conv)
        c, h, w = ch, int(conv.args["h"]), int(conv.args["w"])
        if m.batch_norm:
            layers.append(LayerPlan("batch_norm2d", {"n": c}, 2 * c, c * h * w))
        layers.append(LayerPlan("act", {"fn": m.activation}, 0, c * h * w))
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise SpecError(
                ("model", "channels", i),
                f"too many conv blocks for {shape.image_shape[1]}x{shape.image_shape[2]} images: each halves the size",
            )
        layers.append(LayerPlan("max_pool2d", {"kernel": 2}, 0, c * h * w))
        if m.dropout2d > 0:
            layers.append(LayerPlan("dropout2d", {"p": m.dropout2d}, 0, c * h * w))
    layers.append(LayerPlan("flatten", {}, 0, c * h * w))
    _mlp_tail(layers, c * h * w, m.hidden, m.activation, m.dropout, m.batch_norm, shape.n_outputs)
    return layers


@model_type(
    "sequential",
    spec=SequentialSpec,
    wants_images=_is_spatial,
    not_stackable=lambda _: "sequential models train trial by trial",
)
def _plan_sequential(m: SequentialSpec, shape: DataShape) -> list[LayerPlan]:
    _no_frames(shape, "a sequential model")
    spatial = _is_spatial(m)
    if spatial and shape.image_shape is None:
        raise SpecError(("model", "layers"), "conv2d and max_pool2d need image data; this dataset is tabular")
    image: tuple[int, int, int] | None = shape.image_shape if spatial else None
    flat = shape.n_features
    last_linear = max(i for i, layer in enumerate(m.layers) if isinstance(layer, LinearLayer))
    layers: list[LayerPlan] = []
    for i, layer in enumerate(m.layers):
        loc = ("model", "layers", i)
        size = flat if image is None else image[0] * image[1] * image[2]
        if isinstance(layer, LinearLayer):
            if image is not None:
                raise SpecError(loc, "a linear layer on images needs a flatten layer before it")
            out = layer.out_features
            if i == last_linear:
                if out is not None and out != shape.n_outputs:
                    raise SpecError(
                        (*loc, "out_features"),
                        f"the output layer must have {shape.n_outputs} outputs for this dataset (or omit out_features)",
                    )
                out = shape.n_outputs
            assert out is not None
            layers.append(_linear(flat, out))
            flat = out
        elif isinstance(layer, Conv2dLayer):
            if image is None:
                raise SpecError(loc, "conv2d after flatten: convolutions need image-shaped input")
            conv = _conv(
                image[0],
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                image[1],
                image[2],
            )
            if int(conv.args["h"]) < 1 or int(conv.args["w"]) < 1:
                raise SpecError(loc, f"kernel larger than its {image[1]}x{image[2]} input")
            layers.append(conv)
            image = (layer.out_channels, int(conv.args["h"]), int(conv.args["w"]))
        elif isinstance(layer, MaxPool2dLayer):
            if image is None:
                raise SpecError(loc, "max_pool2d after flatten needs image-shaped input")
            h, w = image[1] // layer.kernel_size, image[2] // layer.kernel_size
            if h < 1 or w < 1:
                raise SpecError(
                    loc, f"pooling a {image[1]}x{image[2]} input by {layer.kernel_size} leaves nothing"
                )
            image = (image[0], h, w)
            layers.append(LayerPlan("max_pool2d", {"kernel": layer.kernel_size}, 0, image[0] * h * w))
        elif layer.type == "batch_norm":
            if image is None:
                layers.append(LayerPlan("batch_norm1d", {"n": flat}, 2 * flat, flat))
            else:
                layers.append(LayerPlan("batch_norm2d", {"n": image[0]}, 2 * image[0], size))
        elif layer.type == "flatten":
            if image is not None:
                flat, image = size, None
            layers.append(LayerPlan("flatten", {}, 0, flat))
        elif layer.type == "dropout":
            kind = "dropout" if image is None else "dropout2d"
            layers.append(LayerPlan(kind, {"p": layer.p}, 0, size))
        else:
            layers.append(LayerPlan("act", {"fn": layer.type}, 0, size))
    if image is not None or flat != shape.n_outputs:
        raise SpecError(("model", "layers"), f"the model must end with {shape.n_outputs} flat outputs")
    return layers


def parameter_count(layers: list[LayerPlan]) -> int:
    return sum(layer.params for layer in layers)


def estimate_memory_bytes(layers: list[LayerPlan], batch_size: int) -> int:
    """Rough float32 footprint of one training step: weights, gradients, two optimizer slots,
    and each layer's activations kept for backward."""
    params = parameter_count(layers)
    acts = sum(layer.activations for layer in layers)
    return 4 * (4 * params + 2 * batch_size * acts)


# Bytes per value of the data a worker holds: float32 features once as loaded and once
# standardized, plus the float64 arrays scikit-learn generates synthetic data in.
DATA_BYTES_PER_VALUE = 16


def estimate_worker_bytes(shape: DataShape, layers: list[LayerPlan], batch_size: int) -> dict[str, int]:
    """What a worker would allocate for this job, by part (data, model + optimizer, one batch's
    activations): the API refuses a spec whose total passes the worker memory limit before it
    is queued, instead of letting a worker die of it."""
    samples = shape.n_samples or 0
    params = parameter_count(layers)
    acts = sum(layer.activations for layer in layers)
    return {
        "data": DATA_BYTES_PER_VALUE * samples * (shape.n_features + 1),
        "model": 4 * 4 * params,  # weights, gradients, two optimizer slots (float32)
        "batch": 4 * 2 * batch_size * (acts + shape.n_features),
    }


def check_memory(shape: DataShape, layers: list[LayerPlan], batch_size: int, limit: int) -> None:
    """SpecError naming the field that drives the estimate when it passes `limit` bytes."""
    parts = estimate_worker_bytes(shape, layers, batch_size)
    total = sum(parts.values())
    if total <= limit:
        return
    biggest = max(parts, key=lambda k: parts[k])
    loc: tuple[str, ...] = {"data": ("dataset",), "model": ("model",), "batch": ("training", "batch_size")}[
        biggest
    ]
    shown = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in parts.items())
    raise SpecError(
        loc,
        f"this job needs about {total / 2**30:.1f} GiB of worker memory ({shown}), more than the "
        f"limit of {limit / 2**30:.1f} GiB (REGTRAIN_MAX_WORKER_MEMORY_BYTES)",
    )


@dataclass(frozen=True)
class Caps:
    """The server's limits on one training: the model's parameters, the worker memory it needs
    (estimate_worker_bytes) and the work it asks for (epochs × samples). A job is checked
    against them at submit, a sweep's worst case likewise, and a worker checks each trial again
    before training it."""

    max_parameters: int
    max_memory_bytes: int | None = None
    max_epoch_samples: int | None = None


def check_caps(spec: JobSpec, shape: DataShape, caps: Caps) -> list[LayerPlan]:
    """The model's plan on data of this shape; SpecError naming the field when the model, the
    worker memory it needs or the work it asks for is over `caps`."""
    layers = check_feasible(spec, shape, caps.max_parameters)
    if caps.max_memory_bytes is not None:
        check_memory(shape, layers, spec.training.batch_size, caps.max_memory_bytes)
    work = spec.training.epochs * (shape.n_samples or 0)
    if caps.max_epoch_samples is not None and work > caps.max_epoch_samples:
        raise SpecError(
            ("training", "epochs"),
            f"{spec.training.epochs} epochs × {shape.n_samples} samples = {work:,} exceeds the "
            f"limit of {caps.max_epoch_samples:,} sample passes per job",
        )
    return layers


def load(spec: JobSpec, shape: DataShape, caps: Caps) -> list[float] | None:
    """How much of each cap the spec takes (1.0 = all of it): parameters, then worker memory and
    epochs × samples where capped; what a sweep's worst case is the worst by. None for a model
    that cannot be built on this data."""
    try:
        layers = plan_model(spec, shape)
    except SpecError:
        return None
    ratios = [parameter_count(layers) / caps.max_parameters]
    if caps.max_memory_bytes is not None:
        worker = estimate_worker_bytes(shape, layers, spec.training.batch_size)
        ratios.append(sum(worker.values()) / caps.max_memory_bytes)
    if caps.max_epoch_samples is not None:
        ratios.append(spec.training.epochs * (shape.n_samples or 0) / caps.max_epoch_samples)
    return ratios


def metric_names(task: Task, has_validation: bool) -> list[str]:
    """The names in a job's per-epoch metrics row that early stopping may monitor."""
    names = ["train_loss", "data_loss", "penalty", "train_eval_loss"]
    if has_validation:
        names += ["val_loss"] + (
            ["val_accuracy"] if task == "classification" else ["val_mse", "val_mae", "val_r2"]
        )
    return names


def check_feasible(spec: JobSpec, shape: DataShape, max_parameters: int) -> list[LayerPlan]:
    """Refuse a spec that cannot train on data of this shape; the plan of its model otherwise."""
    if spec.regularization.label_smoothing > 0 and shape.task != "classification":
        raise SpecError(
            ("regularization", "label_smoothing"), "label smoothing applies to classification only"
        )
    es = spec.training.early_stopping
    known = metric_names(shape.task, spec.split.validation > 0)
    if es and es.monitor not in known:
        raise SpecError(
            ("training", "early_stopping", "monitor"),
            f"{es.monitor!r} is not reported for this job; choose one of {', '.join(known)}",
        )
    layers = plan_model(spec, shape)
    n = parameter_count(layers)
    if n > max_parameters:
        raise SpecError(("model",), f"{n:,} parameters exceed the limit of {max_parameters:,}")
    return layers
