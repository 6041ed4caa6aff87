"""Sequence model types (rnn, transformer, conv1d): their planners, by arithmetic alone.

Each planner counts exactly the parameters worker.training.sequence_models builds (a test holds
the two to the same count over several configs) and the activations one sample keeps for
backward, so that the memory check sees attention's T² and a recurrent layer's T steps. They take
data whose DataShape has `sequence` = (T, F): frames (F values a step) or, with `vocab_size` V,
text as T token ids (F = 1, id 0 the padding) that enter through an embedding.

Self-contained (one planner per type, registered by `model_type`), so that moving the types
to another registry moves this module.
"""

from __future__ import annotations

from service.contract.architecture import DataShape, LayerPlan, _linear, _mlp_tail, model_type
from service.contract.errors import SpecError
from service.contract.spec import Conv1dSpec, RNNSpec, TransformerSpec

SEQUENTIAL_REASON = "sequence models train trial by trial"


def _sequence(shape: DataShape, kind: str) -> tuple[int, int]:
    if shape.sequence is None:
        raise SpecError(
            ("model", "type"),
            f"a {kind} model needs sequence data (an NPZ whose X is N×T×F, or a text column); "
            "this dataset is not one",
        )
    return shape.sequence


def _embedding(shape: DataShape, dim: int, t: int) -> LayerPlan:
    """Text: token ids → vectors (row 0, the padding id, stays zero)."""
    assert shape.vocab_size is not None
    return LayerPlan("embedding", {"num": shape.vocab_size, "dim": dim}, shape.vocab_size * dim, t * dim)


def rnn_layer_params(cell: str, n_in: int, hidden: int) -> int:
    """One direction of one layer: weight_ih (g·H × in), weight_hh (g·H × H), two biases (g·H),
    with g = 3 gates for a GRU, 4 for an LSTM (as torch's nn.GRU/nn.LSTM and their cells hold)."""
    gates = 3 if cell == "gru" else 4
    return gates * hidden * (n_in + hidden) + 2 * gates * hidden


@model_type(
    "rnn",
    spec=RNNSpec,
    not_stackable=lambda _: SEQUENTIAL_REASON,
    factory="worker.training.sequence_models:RNNModel",
)
def _plan_rnn(m: RNNSpec, shape: DataShape) -> list[LayerPlan]:
    t, f = _sequence(shape, "rnn")
    layers: list[LayerPlan] = []
    n_in = f
    if shape.vocab_size is not None:
        layers.append(_embedding(shape, m.embedding_dim, t))
        n_in = m.embedding_dim
    dirs = 2 if m.bidirectional else 1
    gates = 3 if m.cell == "gru" else 4
    for i in range(m.layers):
        args: dict[str, int | float | str] = {
            "cell": m.cell,
            "in": n_in,
            "hidden": m.hidden,
            "directions": dirs,
            "layer": i,
        }
        # Kept for backward per step and direction: the gates, the new state (and an LSTM's cell).
        acts = t * dirs * m.hidden * (gates + 2)
        layers.append(LayerPlan("rnn", args, dirs * rnn_layer_params(m.cell, n_in, m.hidden), acts))
        n_in = m.hidden * dirs
    if m.dropout > 0:
        layers.append(LayerPlan("dropout", {"p": m.dropout}, 0, n_in))
    layers.append(_linear(n_in, shape.n_outputs))
    return layers


def transformer_layer_params(d: int, ff: int) -> int:
    """One encoder layer: attention in-projection (3d × d + 3d) and out-projection (d × d + d),
    the feed-forward block (d·ff + ff + ff·d + d) and two LayerNorms (2d each)."""
    return (4 * d * d + 4 * d) + (2 * d * ff + ff + d) + 4 * d


@model_type(
    "transformer",
    spec=TransformerSpec,
    not_stackable=lambda _: SEQUENTIAL_REASON,
    factory="worker.training.sequence_models:TransformerModel",
)
def _plan_transformer(m: TransformerSpec, shape: DataShape) -> list[LayerPlan]:
    t, f = _sequence(shape, "transformer")
    if t > m.max_length:
        raise SpecError(
            ("model", "max_length"),
            f"the data's sequences are {t} steps long, more than max_length {m.max_length} "
            "(raise it; attention memory grows as T²)",
        )
    d = m.d_model
    layers: list[LayerPlan] = []
    if shape.vocab_size is not None:
        layers.append(_embedding(shape, d, t))
    else:
        layers.append(LayerPlan("linear", {"in": f, "out": d}, f * d + d, t * d))
    layers.append(LayerPlan("positions", {"num": m.max_length, "dim": d}, m.max_length * d, t * d))
    for i in range(m.layers):
        # q, k, v, attention output, the two residual sums and norms, the feed-forward's hidden
        # (before and after its activation), and per head the T×T scores and their softmax.
        acts = t * (8 * d + 2 * m.feedforward) + 2 * m.heads * t * t
        args: dict[str, int | float | str] = {
            "d_model": d,
            "heads": m.heads,
            "feedforward": m.feedforward,
            "layer": i,
        }
        layers.append(LayerPlan("transformer_layer", args, transformer_layer_params(d, m.feedforward), acts))
    layers.append(_linear(d, shape.n_outputs))
    return layers


@model_type(
    "conv1d",
    spec=Conv1dSpec,
    not_stackable=lambda _: SEQUENTIAL_REASON,
    factory="worker.training.sequence_models:Conv1dModel",
)
def _plan_conv1d(m: Conv1dSpec, shape: DataShape) -> list[LayerPlan]:
    t, f = _sequence(shape, "conv1d")
    layers: list[LayerPlan] = []
    c = f
    if shape.vocab_size is not None:
        layers.append(_embedding(shape, m.embedding_dim, t))
        c = m.embedding_dim
    for ch in m.channels:
        args: dict[str, int | float | str] = {
            "in": c,
            "out": ch,
            "kernel": m.kernel_size,
            "padding": m.kernel_size // 2,
        }
        layers.append(LayerPlan("conv1d", args, c * ch * m.kernel_size + ch, 2 * t * ch))
        c = ch
    _mlp_tail(layers, c, m.hidden, "relu", m.dropout, False, shape.n_outputs)
    return layers
