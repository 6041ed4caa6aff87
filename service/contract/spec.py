"""The JobSpec: what a client asks regtrain to train (the contract of docs/API.md).

Plain pydantic, no torch: the API validates specs without loading the engine. Every field has
its default written here, so the OpenAPI schema documents it and a job records the filled spec.
Numbers are strict (no "NaN" or "1e-3" strings, no booleans for numbers) and finite; unknown
fields are refused, so a misspelt option never silently falls back to its default.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_SYNTHETIC_SAMPLES = 1_000_000
MAX_SYNTHETIC_FEATURES = 10_000
MAX_CLASSES = 1_000

BUILTIN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


class Strict(BaseModel):
    """Base of every spec model: strict types, finite numbers, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# --- dataset -------------------------------------------------------------------------------


class BuiltinDataset(Strict):
    """A dataset that ships inside scikit-learn, read offline."""

    name: Literal["digits", "iris", "wine", "breast_cancer", "diabetes"] = Field(
        description="digits (8x8 images, 10 classes), iris, wine, breast_cancer "
        "(classification) or diabetes (regression)."
    )


class SyntheticDataset(Strict):
    """Seeded synthetic data (scikit-learn's make_classification / make_regression)."""

    name: Literal["synthetic"]
    task: Literal["classification", "regression"] = "classification"
    n_samples: int = Field(1000, ge=10, le=MAX_SYNTHETIC_SAMPLES)
    n_features: int = Field(20, ge=1, le=MAX_SYNTHETIC_FEATURES)
    n_classes: int = Field(2, ge=2, le=MAX_CLASSES, description="Ignored for regression.")
    noise: float = Field(0.1, ge=0, le=100, description="Label noise (regression: target noise).")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _enough_features(self) -> SyntheticDataset:
        # make_classification puts each class on a vertex of a hypercube of the informative
        # features: C classes need at least ceil(log2 C) of them.
        need = math.ceil(math.log2(self.n_classes))
        if self.task == "classification" and self.n_features < need:
            raise ValueError(f"{self.n_classes} classes need n_features ≥ {need}")
        return self


class ColumnSpec(Strict):
    """How one feature column of a CSV or Parquet dataset is used (service.data.columns); a
    field left out follows "auto" (the inferred type; mean for numbers, most_frequent for
    categories; one-hot)."""

    type: Literal["numeric", "categorical", "text", "drop"] | None = None
    impute: Literal["mean", "median", "most_frequent", "constant", "none"] | None = Field(
        None,
        description="How gaps are filled (fitted on the train split): mean, median, most_frequent, "
        "constant (0, or the 'other' category) or none; a column with gaps also gets a "
        "missing-indicator feature unless none.",
    )
    encode: Literal["onehot", "embedding"] | None = Field(
        None, description="Categorical columns: one-hot with an 'other' slot (embedding: not yet)."
    )


Columns = (
    Literal["auto"]
    | Annotated[dict[Annotated[str, Field(max_length=300)], ColumnSpec], Field(max_length=10_000)]
)
COLUMNS_DESCRIPTION = (
    '"auto" (default: each column\'s type inferred) or {"<column>": {"type", "impute", "encode"}}; '
    "columns the map leaves out follow auto. CSV and Parquet only."
)


class UploadedDataset(Strict):
    """A dataset uploaded through POST /v1/datasets."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    columns: Columns = Field("auto", description=COLUMNS_DESCRIPTION)


DATA_FORMATS = ("parquet", "csv", "npz")
DataFormat = Literal["parquet", "csv", "npz"]
_SUFFIX_FORMAT: dict[str, DataFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".npz": "npz",
}


def format_from_uri(uri: str) -> DataFormat | None:
    """The format a URI's suffix names (its path, before any query), or None."""
    path = uri.split("?", 1)[0].split("#", 1)[0].lower()
    return next((f for suffix, f in _SUFFIX_FORMAT.items() if path.endswith(suffix)), None)


def _dots(segment: str) -> bool:
    """`.` or `..`, also percent-encoded (`%2e%2E`), as a server decoding the path reads it."""
    return segment.lower().replace("%2e", ".") in (".", "..")


class UriDataset(Strict):
    """A dataset read from an S3-compatible bucket or an https:// URL, fetched by the worker
    (which records its sha256 and size in the job's result, and caches it by hash)."""

    uri: str = Field(
        min_length=8,
        max_length=2000,
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+|https://[^\s/]+/[^\s]*)$",
        description="s3://bucket/key (credentials and endpoint: the server's AWS_* settings) or "
        "https://host/path.",
    )
    format: Literal["parquet", "csv", "npz"] | None = Field(
        None, description="Default: from the URI's suffix (.parquet/.pq, .csv, .npz)."
    )
    target: str | None = Field(
        None, max_length=300, description="The column to predict (CSV, Parquet; default: the last)."
    )
    task: Literal["classification", "regression"] | None = Field(
        None, description="Default: inferred (few distinct integer targets: classification)."
    )
    columns: Columns = Field("auto", description=COLUMNS_DESCRIPTION)

    @field_validator("uri")
    @classmethod
    def _plain_path(cls, uri: str) -> str:
        # A path that would be normalized names another object than it reads as (`secret/../`
        # is `/`): refused, so that what a rule over buckets or prefixes sees is what is read.
        # An S3 key's empty segments (`a//b`, a trailing `/`) are normalized away alike.
        if uri.startswith("s3://"):
            segments = uri.removeprefix("s3://").partition("/")[2].split("/")
            bad = [s for s in segments if s in ("", ".", "..") or _dots(s)]
        else:
            path = urlsplit(uri).path
            bad = [s for s in path.split("/") if _dots(s)]
        if bad:
            shown = "an empty" if not bad[0] else f"a {bad[0]!r}"
            raise ValueError(f"uri: the path may not hold {shown} segment (it would read another path)")
        return uri

    @field_validator("uri")
    @classmethod
    def _no_password(cls, uri: str) -> str:
        # The URI is shown back in the job's and sweep's documents and in MLflow's params: a
        # password in it would be on every page that shows them. An https origin that needs
        # one takes a presigned URL; a bucket, the server's own credentials.
        if urlsplit(uri).password is not None:
            raise ValueError("uri: a password may not be written in the URI (it would be shown in documents)")
        return uri

    @model_validator(mode="after")
    def _known_format(self) -> UriDataset:
        if self.format is None:
            fmt = format_from_uri(self.uri)
            if fmt is None:
                raise ValueError(
                    "format: the URI's suffix names no format; give format (parquet, csv or npz)"
                )
            self.format = fmt
        return self


class _RegisteredDataset:
    """A `dataset` validated against the dataset kinds registered when it is validated
    (service.contract.dataset_kinds), each a union member under its tag: a new kind is
    registered there, never listed here. The OpenAPI schema lists the kinds registered when it
    is generated, in their order."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_dataset,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda d, info: d.model_dump(
                    mode=info.mode,
                    by_alias=info.by_alias,
                    exclude_unset=info.exclude_unset,
                    exclude_defaults=info.exclude_defaults,
                    exclude_none=info.exclude_none,
                ),
                info_arg=True,
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        choices: dict[Any, CoreSchema] = {
            kind.tag: kind.spec.__pydantic_core_schema__ for kind in _dataset_kinds()
        }
        return handler(core_schema.tagged_union_schema(choices, discriminator=_dataset_tag))


def _dataset_kinds() -> list[Any]:
    from service.contract.dataset_kinds import kinds  # the registry's module imports this one

    return kinds()


def _dataset_tag(value: Any) -> str | None:
    from service.contract.dataset_kinds import tag_of

    return tag_of(value)


@functools.cache
def _dataset_union(members: tuple[tuple[str, type[BaseModel]], ...]) -> TypeAdapter[Any]:
    # pydantic's own tagged union over the kinds: its errors name the tag tried
    # (`dataset.uri.uri`, which the API's 422 shows as `body.dataset.uri`) or union_tag_not_found
    union = functools.reduce(operator.or_, [Annotated[cls, Tag(tag)] for tag, cls in members])
    tagged: Any = Annotated[union, Discriminator(_dataset_tag)]  # a type built at run time
    return TypeAdapter(tagged)


def _validate_dataset(value: Any) -> BaseModel:
    members = tuple((kind.tag, kind.spec) for kind in _dataset_kinds())
    validated: BaseModel = _dataset_union(members).validate_python(value)
    return validated


# Typed as the built-in kinds (another kind's spec is a Strict model the registry knows): no room
# reads a kind's fields but the kind itself (service.contract.dataset_kinds).
DatasetSpec = Annotated[
    BuiltinDataset | SyntheticDataset | UploadedDataset | UriDataset,
    _RegisteredDataset,
]


class SplitSpec(Strict):
    """Seeded train/validation/test split, stratified for classification."""

    validation: float = Field(0.2, ge=0, lt=1, description="Fraction held out for validation.")
    test: float = Field(0.2, ge=0, lt=1, description="Fraction held out for the final test.")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _leave_training_data(self) -> SplitSpec:
        if self.validation + self.test > 0.9:
            raise ValueError("validation + test must leave at least 10% of the data to train on")
        return self


# --- model ---------------------------------------------------------------------------------

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu"]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Dropout = Annotated[float, Field(ge=0, lt=1)]


class ModelConfig(Strict):
    """Base of every model type's config (built-in or plugin): `type` names its registered
    entry in service.contract.architecture.MODEL_TYPES."""

    type: str


class MLPSpec(ModelConfig):
    """Fully connected network: Linear → [BatchNorm] → activation → [Dropout] per hidden layer."""

    type: Literal["mlp"]
    hidden: list[Width] = Field(default_factory=lambda: [128], max_length=MAX_LAYERS)
    activation: Activation = "relu"
    dropout: Dropout = Field(0.0, description="Dropout after each hidden activation, never on the output.")
    batch_norm: bool = False


class CNNSpec(ModelConfig):
    """Conv blocks (Conv2d → [BatchNorm2d] → activation → MaxPool2d(2) → [Dropout2d]) then an MLP head."""

    type: Literal["cnn"]
    channels: list[Width] = Field(default_factory=lambda: [16, 32], min_length=1, max_length=16)
    kernel_size: int = Field(3, ge=1, le=11, description="Odd sizes keep the spatial shape ('same' padding).")
    hidden: list[Width] = Field(default_factory=lambda: [64], max_length=MAX_LAYERS)
    activation: Activation = "relu"
    dropout: Dropout = Field(0.0, description="Dropout after each hidden activation of the head.")
    dropout2d: Dropout = Field(0.0, description="Dropout2d (whole channels) between conv blocks.")
    batch_norm: bool = False


class LinearLayer(Strict):
    type: Literal["linear"]
    out_features: Width | None = Field(
        None, description="Omit on the last linear layer: the output size comes from the data."
    )


class Conv2dLayer(Strict):
    type: Literal["conv2d"]
    out_channels: Width
    kernel_size: int = Field(3, ge=1, le=11)
    stride: int = Field(1, ge=1, le=8)
    padding: int = Field(0, ge=0, le=8)


class ActivationLayer(Strict):
    type: Literal["relu", "gelu", "tanh"]


class DropoutLayer(Strict):
    type: Literal["dropout"]
    p: Dropout = 0.5


class BatchNormLayer(Strict):
    type: Literal["batch_norm"]


class FlattenLayer(Strict):
    type: Literal["flatten"]


class MaxPool2dLayer(Strict):
    type: Literal["max_pool2d"]
    kernel_size: int = Field(2, ge=1, le=8)


LayerSpec = Annotated[
    LinearLayer
    | Conv2dLayer
    | ActivationLayer
    | DropoutLayer
    | BatchNormLayer
    | FlattenLayer
    | MaxPool2dLayer,
    Field(discriminator="type"),
]


class SequentialSpec(ModelConfig):
    """An explicit list of layers; input and output sizes come from the data."""

    type: Literal["sequential"]
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)

    @model_validator(mode="after")
    def _ends_with_linear(self) -> SequentialSpec:
        linears = [i for i, layer in enumerate(self.layers) if isinstance(layer, LinearLayer)]
        if not linears:
            raise ValueError("layers must contain at least one linear layer (the output layer)")
        for i in linears[:-1]:
            layer = self.layers[i]
            if isinstance(layer, LinearLayer) and layer.out_features is None:
                raise ValueError(f"layers.{i}.out_features is required except on the last linear layer")
        if any(isinstance(layer, DropoutLayer) for layer in self.layers[linears[-1] + 1 :]):
            raise ValueError("dropout after the output layer is not allowed (it would drop logits)")
        return self


MAX_POSITIONS = 4096  # the longest sequence (T) a transformer's learned positions may cover


class RNNSpec(ModelConfig):
    """A recurrent classifier/regressor over sequences (frames N×T×F, or text as token ids through
    an embedding): stacked GRU/LSTM layers, the final state (both directions' when
    bidirectional, at each sequence's own length) → dropout → a linear output layer."""

    type: Literal["rnn"]
    cell: Literal["gru", "lstm"] = Field("gru", description="The recurrent cell.")
    hidden: Width = Field(64, description="Hidden units per direction and layer.")
    layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read each sequence forward and backward.")
    embedding_dim: Width = Field(64, description="Text only: the size of each token's embedding.")
    dropout: Dropout = Field(
        0.0, description="Dropout between stacked layers and on the final state before the output layer."
    )
    embedding_dropout: Dropout = Field(
        0.0,
        description="Drops whole input steps (a token's whole embedding, or a whole frame), the same "
        "mask over their features, scaled by 1/(1-p); training only.",
    )
    recurrent_dropout: Dropout = Field(
        0.0,
        description="Variational dropout on the recurrent input h(t-1): one mask per sequence and "
        "layer, shared by all its time steps (Gal & Ghahramani 2016); training only. Above 0 the "
        "cells are stepped one time step at a time in training (0: the fused GRU/LSTM kernel, "
        "cuDNN on a GPU).",
    )


class TransformerSpec(ModelConfig):
    """A transformer encoder over sequences: input projection (frames) or embedding (text) plus
    learned positions → `layers` post-norm encoder layers → mean over each sequence's own steps →
    a linear output layer. Padding is masked out of attention (key_padding_mask)."""

    type: Literal["transformer"]
    d_model: Width = Field(64, description="Width of every position's representation.")
    heads: int = Field(4, ge=1, le=64, description="Attention heads; must divide d_model.")
    layers: int = Field(2, ge=1, le=24, description="Encoder layers.")
    feedforward: Width = Field(128, description="Hidden width of each layer's feed-forward block.")
    dropout: Dropout = Field(0.1, description="Dropout in the feed-forward block and residual paths.")
    attention_dropout: Dropout = Field(0.0, description="Dropout on the attention weights (softmax output).")
    max_length: int = Field(
        512,
        ge=1,
        le=MAX_POSITIONS,
        description="Positions learned; sequences longer than this are refused (attention memory "
        "grows as T²).",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerSpec:
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        return self


class Conv1dSpec(ModelConfig):
    """Temporal convolutions over sequences: per channel entry Conv1d ('same' padding) → ReLU,
    then the mean over each sequence's own steps → an MLP head (ReLU, dropout)."""

    type: Literal["conv1d"]
    channels: list[Width] = Field(default_factory=lambda: [32, 32], min_length=1, max_length=16)
    kernel_size: int = Field(5, ge=1, le=31, description="Odd sizes keep the length ('same' padding).")
    hidden: list[Width] = Field(default_factory=lambda: [64], max_length=MAX_LAYERS)
    embedding_dim: Width = Field(64, description="Text only: the size of each token's embedding.")
    dropout: Dropout = Field(0.0, description="Dropout after each hidden activation of the head.")

    @model_validator(mode="after")
    def _odd_kernel(self) -> Conv1dSpec:
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (so that padding keeps every sequence's length)")
        return self


class _RegisteredModel:
    """A `model` validated against the model types registered when it is validated, not when
    this module was imported: built-in types and plugins (service.contract.model_plugins) enter
    through the one registry, and the OpenAPI schema lists whatever it holds when generated."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_model,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda m, info: m.model_dump(mode=info.mode), info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        choices: dict[Any, CoreSchema] = {n: c.__pydantic_core_schema__ for n, c in _model_specs().items()}
        return handler(core_schema.tagged_union_schema(choices, discriminator="type"))


def _model_specs() -> dict[str, type[BaseModel]]:
    from service.contract.model_plugins import model_specs  # the registry's module imports this one

    return model_specs()


@functools.cache
def _known_types(names: tuple[str, ...]) -> type[BaseModel]:
    return create_model("KnownModelType", type=(Literal[names], ...))  # type: ignore[arg-type]


def _validate_model(value: Any) -> BaseModel:
    specs = _model_specs()
    if isinstance(value, BaseModel) and specs.get(str(getattr(value, "type", ""))) is type(value):
        return value
    tag = value.get("type") if isinstance(value, dict) else None
    if isinstance(tag, str) and tag in specs:
        return specs[tag].model_validate(value)
    # Refused at model.type, naming the types this process knows (plugins included).
    _known_types(tuple(sorted(specs))).model_validate({"type": tag})
    raise AssertionError("unreachable: the tag is not one of the known types")


# Typed as the built-ins so that code narrowing on them type-checks; a plugin's config is a
# ModelConfig (a Strict model with `type: Literal[name]`) the registry knows.
ModelSpec = Annotated[
    MLPSpec | CNNSpec | SequentialSpec | RNNSpec | TransformerSpec | Conv1dSpec | ModelConfig,
    _RegisteredModel,
]


# --- regularization and optimization -------------------------------------------------------


class RegularizationSpec(Strict):
    """Explicit penalties. L2 is λ·Σw² (gradient 2λw); L1 is λ·Σ|w|."""

    l1: float = Field(0.0, ge=0, le=100, description="λ₁ of λ₁·Σ|w|.")
    l2: float = Field(
        0.0,
        ge=0,
        le=100,
        description="λ₂ of λ₂·Σw² (Keras' convention, gradient 2λ₂w). An sgd/adam weight_decay "
        "of wd equals l2 = wd/2.",
    )
    apply_to: Literal["weights", "all"] = Field(
        "weights",
        description="weights: tensors of 2+ dimensions (weight matrices, kernels); all: biases "
        "and normalization parameters too. Also the scope of optimizer.weight_decay.",
    )
    l1_mode: Literal["subgradient", "proximal"] = Field(
        "subgradient",
        description="proximal soft-thresholds after each step, giving exact zeros (exact for "
        "sgd; a heuristic with adaptive optimizers).",
    )
    max_norm: float | None = Field(
        None, gt=0, le=1e6, description="Cap on each unit's incoming weight-vector norm."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Classification only.")


class StepScheduler(Strict):
    type: Literal["step"]
    step_size: int = Field(10, ge=1, le=MAX_EPOCHS, description="Epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1)


class CosineScheduler(Strict):
    type: Literal["cosine"]
    t_max: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Default: training.epochs.")
    eta_min: float = Field(0.0, ge=0)


class PlateauScheduler(Strict):
    type: Literal["plateau"]
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(5, ge=0, le=MAX_EPOCHS)
    min_lr: float = Field(0.0, ge=0)


SchedulerSpec = Annotated[StepScheduler | CosineScheduler | PlateauScheduler, Field(discriminator="type")]


class OptimizerSpec(Strict):
    """The optimizer. weight_decay keeps PyTorch's meaning (see RegularizationSpec.l2)."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(0.001, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd and rmsprop only.")
    nesterov: bool = Field(False, description="sgd only; needs momentum > 0.")
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2, description="adam/adamw."
    )
    eps: float = Field(1e-8, gt=0, le=1)
    weight_decay: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Coupled (g += wd·w, equal to l2 = wd/2) for sgd, adam, rmsprop; decoupled "
        "(w -= lr·wd·w) for adamw.",
    )
    scheduler: SchedulerSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerSpec:
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs name 'sgd' and momentum > 0")
        if self.momentum and self.name not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to sgd and rmsprop, not {self.name}")
        return self


# --- training ------------------------------------------------------------------------------


class EarlyStoppingSpec(Strict):
    monitor: str = Field("val_loss", pattern=r"^(val|train)_[a-z0-9_]+$|^data_loss$")
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1, le=MAX_EPOCHS, description="Evaluations without improvement.")
    min_delta: float = Field(0.0, ge=0, description="Smallest absolute change that counts.")
    restore_best: bool = Field(True, description="Leave the best epoch's weights in `final`.")


class TrainingSpec(Strict):
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast on CUDA.")
    grad_clip_norm: float | None = Field(None, gt=0, le=1e6, description="Global-norm clipping.")
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint_every: int = Field(
        1, ge=0, le=MAX_EPOCHS, description="Save epoch-K every K epochs (0: only best and final)."
    )
    time_limit_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)


class NotifySpec(Strict):
    """A webhook: regtrain POSTs `{"event", "job"}` (the job as GET /v1/jobs/{id} shows it) to
    `url` when the job changes status, signed by the Standard Webhooks scheme (webhook-id,
    webhook-timestamp, webhook-signature) with `secret`, or else the tenant's secret."""

    url: str = Field(max_length=2000, pattern=r"^https?://[^\s/?#]+(?:[/?#]\S*)?$")
    events: list[Literal["status", "done"]] = Field(
        default_factory=lambda: ["done"],  # type: ignore[arg-type]  # pydantic-mypy reads the lambda as list[str], not the Literal
        min_length=1,
        max_length=2,
        description="done: once, when the job has finished (succeeded, failed or cancelled); "
        "status: at every change of status (queued, running, and the final one).",
    )
    # exclude: write-only. The stored spec, and so every document served, leaves it out.
    secret: str | None = Field(
        None,
        exclude=True,
        pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$",
        description="A Standard Webhooks secret (whsec_ + base64 of 24 to 64 random bytes) that "
        "signs this job's deliveries; write-only, never shown. Default: the tenant's secret "
        "(REGTRAIN_WEBHOOK_SECRETS).",
    )


# An MLflow name a tenant may choose: no path separators, quotes or control characters, so it
# reads the same in MLflow's UI, its search filters and a URL's query.
MLFLOW_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"


class MlflowTracking(Strict):
    """Where the job's run goes in the operator's MLflow. The tracker itself is the operator's
    alone (REGTRAIN_MLFLOW_TRACKING_URI): a job names an experiment and a model, never a URL."""

    experiment: str | None = Field(
        None,
        max_length=100,
        pattern=MLFLOW_NAME,
        description="The MLflow experiment of the job's run (letters, digits, space, . _ -; up to "
        "100). Default: REGTRAIN_MLFLOW_EXPERIMENT. On a server with API keys it is the tenant's "
        "own, `{tenant}/{experiment}` in MLflow, so no tenant writes into another's. The tracker's "
        "address is never a job's to choose: only REGTRAIN_MLFLOW_TRACKING_URI, set by the "
        "operator.",
    )
    register_as: str | None = Field(
        None,
        max_length=100,
        pattern=MLFLOW_NAME,
        description="Register the model of a job that succeeded (its best checkpoint, logged as "
        "the run's `model` artifacts) as a new version of this registered model; for a sweep, its "
        "winner (the retrained best trial). On a server with API keys the name is "
        "`{tenant}.{register_as}` in MLflow's registry, which all tenants share.",
    )


class TrackingSpec(Strict):
    """Experiment tracking: each job a run in the operator's MLflow, a sweep a parent run with
    one nested run per trial."""

    mlflow: MlflowTracking = Field(default_factory=MlflowTracking)


class JobSpec(Strict):
    """A training job. Only `dataset` and `model` are required."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "seed-l2",
                    "dataset": {"name": "digits"},
                    "split": {"validation": 0.2, "test": 0.2, "seed": 0},
                    "model": {"type": "mlp", "hidden": [128], "activation": "relu", "dropout": 0.5},
                    "regularization": {"l1": 0.0, "l2": 0.0001, "apply_to": "weights"},
                    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
                    "training": {"epochs": 20, "batch_size": 64, "seed": 0, "device": "auto"},
                }
            ]
        }
    )

    name: str | None = Field(None, max_length=200)
    dataset: DatasetSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ModelSpec
    regularization: RegularizationSpec = Field(default_factory=RegularizationSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    notify: NotifySpec | None = Field(None, description="A webhook called when the job changes status.")
    tracking: TrackingSpec | None = Field(
        None,
        description="Names for the job's run in MLflow (a sweep's base: for its parent run, its "
        "trials and its winner). Only on a server that tracks runs (REGTRAIN_MLFLOW_TRACKING_URI, "
        "which then tracks every job); the tracker's address is the operator's, never a job's.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        es = self.training.early_stopping
        if (es and es.monitor.startswith("val_")) and self.split.validation == 0:
            raise ValueError("early_stopping monitors a validation metric but split.validation is 0")
        return self
