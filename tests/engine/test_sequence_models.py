"""Sequence model types (rnn, transformer, conv1d): the planner counts what the engine builds,
padding is read as absent, and their regularization is what docs/REGULARIZATION.md says
("Sequence models"): penalties over exactly the tensors the scope names, variational dropout
with one mask per sequence, every dropout off in eval, max-norm on every weight-bearing layer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from engine_helpers import make_spec
from torch import nn

from service.contract.architecture import DataShape, parameter_count, plan_model
from service.contract.errors import SpecError
from service.contract.spec import JobSpec
from worker.training import sequence_models
from worker.training.models import create_model
from worker.training.regularization import Penalty, apply_max_norm, max_norm_tensors, split_parameters

T, F, V, CLASSES = 12, 3, 40, 4

CONFIGS: list[dict[str, Any]] = [
    {"type": "rnn"},
    {"type": "rnn", "cell": "lstm", "layers": 2, "bidirectional": True, "hidden": 7, "dropout": 0.2},
    {"type": "rnn", "cell": "gru", "layers": 3, "hidden": 5, "recurrent_dropout": 0.3, "embedding_dim": 6},
    {"type": "transformer", "d_model": 16, "heads": 2, "layers": 2, "feedforward": 24, "max_length": 30},
    {"type": "transformer", "d_model": 8, "heads": 8, "layers": 1, "feedforward": 8, "max_length": T},
    {"type": "conv1d", "channels": [5, 6], "kernel_size": 3, "hidden": [9, 4], "dropout": 0.3},
    {"type": "conv1d", "channels": [4], "kernel_size": 1, "hidden": [], "embedding_dim": 3},
]


def shape(text: bool) -> DataShape:
    f = 1 if text else F
    return DataShape("classification", T * f, CLASSES, None, 100, (T, f), V if text else None)


def spec_of(model: dict[str, Any], **parts: Any) -> JobSpec:
    return make_spec(model=model, **parts)


def built(model: dict[str, Any], text: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(spec_of(model), shape(text))


def batch(text: bool, n: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if text:
        return torch.randint(1, V, (n, T), generator=g)
    return torch.randn(n, T, F, generator=g)


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("model", CONFIGS)
def test_planner_counts_the_parameters_the_engine_builds(model: dict[str, Any], text: bool) -> None:
    spec = spec_of(model)
    module = create_model(spec, shape(text))
    assert parameter_count(plan_model(spec, shape(text))) == sum(p.numel() for p in module.parameters())
    assert module(batch(text)).shape == (6, CLASSES)


@pytest.mark.parametrize("kind", ["rnn", "transformer", "conv1d"])
def test_sequence_models_refuse_rows_and_images(kind: str) -> None:
    rows = DataShape("classification", 4, 3, None, 150)
    with pytest.raises(SpecError, match="needs sequence data"):
        plan_model(spec_of({"type": kind}), rows)


def test_transformer_refuses_sequences_longer_than_its_positions() -> None:
    with pytest.raises(SpecError) as e:
        plan_model(spec_of({"type": "transformer", "max_length": T - 1}), shape(False))
    assert e.value.loc == ("model", "max_length")


def test_transformer_heads_divide_d_model() -> None:
    with pytest.raises(ValueError, match="must divide d_model"):
        spec_of({"type": "transformer", "d_model": 10, "heads": 4})


def test_attention_memory_grows_as_t_squared() -> None:
    spec = spec_of(
        {"type": "transformer", "d_model": 8, "heads": 2, "layers": 1, "feedforward": 8, "max_length": 4096}
    )
    acts = [
        sum(
            layer.activations
            for layer in plan_model(spec, DataShape("classification", t, 2, None, 10, (t, 1)))
        )
        for t in (1000, 2000)
    ]
    assert acts[1] > 3.5 * acts[0]


# --- padding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        {"type": "rnn", "cell": "gru", "bidirectional": True, "layers": 2, "hidden": 6},
        {"type": "rnn", "cell": "lstm", "hidden": 6},
        {"type": "transformer", "d_model": 8, "heads": 2, "layers": 2, "feedforward": 16, "max_length": T},
        {"type": "conv1d", "channels": [5, 5], "kernel_size": 3, "hidden": [8]},
    ],
)
def test_padding_is_read_as_absent(model: dict[str, Any]) -> None:
    """A sequence of length L padded to T gives the output of the same L steps alone."""
    m = built(model).eval()
    x = batch(False, n=3)
    lengths = torch.tensor([T, 5, 1])
    padded = x.clone()
    padded[1, 5:] = 99.0  # whatever the padding holds is never read
    padded[2, 1:] = -7.0
    out = m(padded, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i], m(x[i : i + 1, :n])[0], atol=1e-5, rtol=1e-5)


def test_text_padding_id_zero_is_read_as_absent() -> None:
    m = built({"type": "rnn", "bidirectional": True, "hidden": 6, "embedding_dim": 5}, text=True).eval()
    ids = batch(True, n=1)
    padded = torch.cat([ids[:, :7], torch.zeros(1, T - 7, dtype=torch.long)], 1)
    torch.testing.assert_close(m(padded), m(ids[:, :7]), atol=1e-5, rtol=1e-5)


# --- L1/L2 scope and a replay ----------------------------------------------------------------


def gru_weights(m: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the default scope names, by name: each GRU cell's weight_ih and weight_hh,
    the embedding table (text) and the output layer's weight."""
    return {
        n: p
        for n, p in m.named_parameters()
        if n.endswith(("weight_ih", "weight_hh", "out.weight", "embedding.weight"))
    }


@pytest.mark.parametrize("text", [False, True])
def test_l2_scope_of_a_gru_is_its_weight_matrices(text: bool) -> None:
    m = built({"type": "rnn", "layers": 2, "bidirectional": True, "hidden": 5, "embedding_dim": 4}, text)
    inside, outside = split_parameters(m, "weights")
    names = {id(p): n for n, p in m.named_parameters()}
    assert {names[id(p)] for p in inside} == set(gru_weights(m))
    assert all(names[id(p)].endswith(("bias_ih", "bias_hh", "out.bias")) for p in outside)
    assert len(gru_weights(m)) == 2 * 2 * 2 + 1 + int(text)
    everything, nothing = split_parameters(m, "all")
    assert len(everything) == len(list(m.parameters())) and not nothing


def test_l2_on_a_gru_replays_lambda_sum_of_squares() -> None:
    """Five sgd steps of the engine's parts (Penalty over the scope, its gradient 2λw added to
    the data gradient) against autograd of data loss + λ·Σw² written over the named tensors:
    the same losses (≤ 5e-7) and the same weights."""
    lam, lr = 0.01, 0.1
    config = {"type": "rnn", "cell": "gru", "layers": 2, "hidden": 6, "embedding_dim": 5}
    engine, reference = built(config, True), built(config, True)
    x, y = batch(True, n=8), torch.arange(8) % CLASSES
    inside, _ = split_parameters(engine, "weights")
    penalty = Penalty(inside, 0.0, lam, "subgradient")
    opt_e = torch.optim.SGD(engine.parameters(), lr=lr)
    opt_r = torch.optim.SGD(reference.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(5):
        opt_e.zero_grad()
        data_loss = loss_fn(engine(x), y)
        engine_loss = float(data_loss.detach()) + float(penalty.value())
        data_loss.backward()
        penalty.add_gradient()
        opt_e.step()

        opt_r.zero_grad()
        written = lam * sum(w.square().sum() for w in gru_weights(reference).values())
        ref_loss = loss_fn(reference(x), y) + written
        ref_loss.backward()
        opt_r.step()
        assert abs(engine_loss - float(ref_loss)) <= 5e-7
    for a, b in zip(engine.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# --- the fused kernel -----------------------------------------------------------------------


def run(m: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, *, fused: bool) -> torch.Tensor:
    """The model's output by the fused kernel, or by the stepped cells in its place (with no
    mask: what the stepped path computes in eval)."""
    if fused:
        return m(x, lengths)

    def stepped(self: Any, cell: nn.Module, seq: torch.Tensor, n: torch.Tensor, reverse: bool) -> Any:
        return self._direction(cell, seq, sequence_models.step_mask(n, seq.shape[1]), reverse)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequence_models.RNNModel, "_fused", stepped)
        return m(x, lengths)


def stepped_and_fused(
    m: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return run(m, x, lengths, fused=False), run(m, x, lengths, fused=True)


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_fused_kernel_computes_what_the_stepped_cells_do(cell: str, text: bool) -> None:
    """The same weights, the same outputs (≤ 1e-5), over sequences of every length from 1 to T
    read both ways through two layers; and the same gradients into the cells' tensors."""
    config = {
        "type": "rnn",
        "cell": cell,
        "layers": 2,
        "bidirectional": True,
        "hidden": 7,
        "embedding_dim": 5,
    }
    m = built(config, text).eval()
    x = batch(text, n=T)
    lengths = torch.arange(1, T + 1)
    if text:  # text's lengths come from its padding
        x = torch.where(sequence_models.step_mask(lengths, T), x, torch.zeros_like(x))
    stepped, fused = stepped_and_fused(m, x, None if text else lengths)
    torch.testing.assert_close(fused, stepped, atol=1e-5, rtol=1e-5)
    grads = []
    for fused_path in (False, True):
        m.zero_grad()
        run(m, x, None if text else lengths, fused=fused_path).square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) == len(list(m.parameters()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_max_norm_and_l2_reach_the_weights_the_fused_kernel_reads() -> None:
    """The fused path reads the cells' own tensors: max-norm caps them (and so what the kernel
    computes with), and the L2 scope names them, as for the stepped cells."""
    m = built({"type": "rnn", "cell": "lstm", "layers": 2, "bidirectional": True, "hidden": 6})
    capped = {id(t) for t in max_norm_tensors(m)}
    inside, _ = split_parameters(m, "weights")
    cells = [p for n, p in m.named_parameters() if n.startswith("cells.") and ".weight_" in n]
    assert len(cells) == 2 * 2 * 2 and all(id(p) in capped for p in cells)
    assert {id(p) for p in cells} <= {id(p) for p in inside}
    with torch.no_grad():
        for p in cells:
            p.mul_(50)
    m.eval()
    x = batch(False)
    before = m(x)
    apply_max_norm(m, 0.5)
    assert all(float(p.norm(dim=1).max()) <= 0.5 + 1e-6 for p in cells)
    stepped, fused = stepped_and_fused(m, x, None)
    assert not torch.allclose(fused, before)  # the kernel read the capped weights
    torch.testing.assert_close(fused, stepped, atol=1e-5, rtol=1e-5)


def test_training_takes_the_fused_kernel_only_without_a_recurrent_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    for name in ("_fused", "_direction"):
        original = getattr(sequence_models.RNNModel, name)
        monkeypatch.setattr(
            sequence_models.RNNModel,
            name,
            lambda self, *a, _o=original, _n=name, **k: calls.append(_n) or _o(self, *a, **k),
        )
    built({"type": "rnn", "hidden": 4}).train()(batch(False))
    assert set(calls) == {"_fused"}
    calls.clear()
    built({"type": "rnn", "hidden": 4, "recurrent_dropout": 0.3}).train()(batch(False))
    assert set(calls) == {"_direction"}
    calls.clear()
    built({"type": "rnn", "hidden": 4, "recurrent_dropout": 0.3}).eval()(batch(False))
    assert set(calls) == {"_fused"}  # no mask in eval


# --- dropout -------------------------------------------------------------------------------


def test_recurrent_dropout_uses_one_mask_per_sequence() -> None:
    """What the cell receives as h(t-1) is the previous state times one mask, the same at every
    step of a sequence (values 0 or 1/(1-p)), and different between sequences."""
    p = 0.5
    m = built({"type": "rnn", "cell": "gru", "hidden": 16, "recurrent_dropout": p}).train()
    cell = m.cells[0][0]  # type: ignore[index]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    cell.register_forward_hook(lambda _m, args, out: seen.append((args[1].detach(), out.detach())))
    m(batch(False, n=8))
    masks = []
    for (h_in, _), (_, h_prev) in zip(seen[1:], seen[:-1], strict=True):
        assert bool((h_prev != 0).all())
        masks.append(h_in / h_prev)
    for mask in masks:
        torch.testing.assert_close(mask, masks[0])
    values = masks[0].round(decimals=4).unique().tolist()
    assert values == [0.0, 1 / (1 - p)]
    assert len({tuple(row.tolist()) for row in masks[0]}) > 1  # a mask per sequence


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.2])  # the fused kernel, the stepped cells
def test_embedding_dropout_drops_whole_steps(
    recurrent_dropout: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = built(
        {"type": "rnn", "embedding_dim": 6, "embedding_dropout": 0.5, "recurrent_dropout": recurrent_dropout},
        text=True,
    ).train()
    seen: list[torch.Tensor] = []
    dropped = sequence_models.step_dropout

    def recorded(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        seen.append(dropped(x, p, training).detach())
        return seen[-1]

    monkeypatch.setattr(sequence_models, "step_dropout", recorded)
    m(batch(True, n=8))
    steps = seen[0]  # (B, T, E) what the first layer reads: each step all zero or all kept
    zero = (steps == 0).all(-1)
    assert bool(zero.any()) and bool((~zero).any())
    assert bool(((steps != 0).all(-1) | zero).all())


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize(
    "model",
    [
        {"type": "rnn", "layers": 2, "dropout": 0.5, "embedding_dropout": 0.5, "recurrent_dropout": 0.5},
        {"type": "rnn", "cell": "lstm", "bidirectional": True, "recurrent_dropout": 0.5},
        {
            "type": "transformer",
            "d_model": 8,
            "heads": 2,
            "dropout": 0.5,
            "attention_dropout": 0.5,
            "max_length": T,
        },
        {"type": "conv1d", "channels": [4], "hidden": [16], "dropout": 0.5},
    ],
)
def test_dropout_only_in_training_eval_is_deterministic(model: dict[str, Any], text: bool) -> None:
    m = built(model, text)
    x = batch(text)
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.equal(a, m(x))
    m.eval()
    torch.manual_seed(1)
    e = m(x)
    torch.manual_seed(2)
    assert torch.equal(e, m(x))


def test_attention_dropout_is_the_attention_weights_rate() -> None:
    m = built(
        {
            "type": "transformer",
            "d_model": 8,
            "heads": 2,
            "dropout": 0.1,
            "attention_dropout": 0.3,
            "max_length": T,
        }
    )
    rates = {mod.dropout for mod in m.modules() if isinstance(mod, nn.MultiheadAttention)}
    assert rates == {0.3}


# --- max-norm ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize(
    "model",
    [
        {"type": "rnn", "cell": "lstm", "layers": 2, "bidirectional": True, "hidden": 5, "embedding_dim": 4},
        {"type": "transformer", "d_model": 8, "heads": 2, "layers": 1, "feedforward": 8, "max_length": T},
        {"type": "conv1d", "channels": [4, 3], "hidden": [6], "embedding_dim": 4},
    ],
)
def test_max_norm_caps_every_row_of_every_weight_bearing_layer(model: dict[str, Any], text: bool) -> None:
    """Every 2+-dimensional parameter is a weight max-norm caps (none is silently skipped)."""
    m = built(model, text)
    capped = {id(w) for w in max_norm_tensors(m)}
    assert capped == {id(p) for p in m.parameters() if p.ndim >= 2}
    c = 0.2
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(50)
    apply_max_norm(m, c)
    for w in max_norm_tensors(m):
        assert float(w.detach().reshape(w.shape[0], -1).norm(dim=1).max()) <= c * (1 + 1e-5)


def test_a_two_dimensional_sample_is_a_sequence_of_frames() -> None:
    """(T, F) samples (an NPZ X of N×T×F) are sequences; rows and images keep their meaning."""
    frames = DataShape.of("classification", (T, F), CLASSES, 50)
    assert frames.sequence == (T, F) and frames.image_shape is None and frames.n_features == T * F
    assert frames.vocab_size is None and frames.flat().sequence is None
    assert DataShape.of("classification", (F,), CLASSES).sequence is None
    assert DataShape.of("classification", (1, 8, 8), CLASSES).sequence is None
    spec = spec_of({"type": "conv1d"})
    assert create_model(spec, frames)(batch(False)).shape == (6, CLASSES)
