"""Sequence models (rnn, transformer, conv1d): the modules service.contract.sequence_models plans.

Input: a float batch (B, T, F) of frames, or a long batch (B, T) of token ids (0 = padding) when
the data shape has a vocabulary; `lengths` (B,) optionally gives each sequence's own length
(text derives it from its padding). Every model reads a sequence only up to its length: the RNN
keeps each sequence's state at its last step, the transformer masks padded keys and averages
over real steps, conv1d averages over real steps.

Regularization these models add (docs/REGULARIZATION.md, "Sequence models"):
- embedding dropout drops whole steps (a token's embedding or a frame), one Bernoulli draw per
  (sequence, step) shared by its features, scaled by 1/(1-p);
- recurrent dropout is variational (Gal & Ghahramani 2016): one mask per sequence, layer and
  direction on h(t-1), drawn once and shared over every time step; the cells are stepped
  explicitly for it (nn.GRUCell/nn.LSTMCell hold the same tensors as one layer of nn.GRU/LSTM).
  Without it (recurrent_dropout 0, and in eval) each layer and direction runs nn.GRU/LSTM's
  fused kernel (cuDNN on a GPU) over the cell's own tensors: the same module, parameters,
  checkpoints and regularization scope either way, one kernel call instead of T steps;
- attention dropout is nn.MultiheadAttention's dropout on the attention weights.
All are identity in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from service.contract.architecture import DataShape
from service.contract.spec import Conv1dSpec, RNNSpec, TransformerSpec


def step_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole steps of (B, T, E): one draw per (sequence, step), shared by its E values."""
    if not training or p == 0:
        return x
    keep = torch.empty(x.shape[0], x.shape[1], 1, device=x.device, dtype=x.dtype).bernoulli_(1 - p)
    return x * keep / (1 - p)


def step_mask(lengths: Tensor, t: int) -> Tensor:
    """(B, T) True where a step is within its sequence's length."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


class SequenceInput(nn.Module):
    """Frames pass through; token ids go through an embedding (row 0, padding, stays zero).
    Returns (B, T, E) and the lengths (given, else from the padding of text or of frames)."""

    def __init__(self, vocab_size: int | None, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0) if vocab_size is not None else None

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.embedding is not None:
            ids = x.long()
            if lengths is None:
                lengths = (ids != 0).sum(1).clamp(min=1)
            return self.embedding(ids), lengths
        if lengths is None:  # frames: the trailing all-zero ones are padding (worker.training.data)
            lengths = frame_lengths(x)
        return x.float(), lengths


def frame_lengths(x: Tensor) -> Tensor:
    """(B,) each sequence's frames up to its last one that is not all zero (at least 1): how a
    frames dataset's lengths travel with its standardized frames (their padding zeroed)."""
    real = (x != 0).any(-1).long()  # (B, T)
    trailing = real.flip(1).cumsum(1) == 0  # True over the padding at the end
    return (x.shape[1] - trailing.sum(1)).clamp(min=1)


def reversed_within(lengths: Tensor, t: int) -> Tensor:
    """(B, T) indices reversing each sequence's first `length` steps in place, the padding after
    them left where it is: a permutation that is its own inverse."""
    steps = torch.arange(t, device=lengths.device)[None, :]
    last = lengths[:, None] - 1
    return torch.where(steps <= last, last - steps, steps)


class RNNModel(nn.Module):
    def __init__(self, m: RNNSpec, shape: DataShape) -> None:
        super().__init__()
        assert shape.sequence is not None
        self.input = SequenceInput(shape.vocab_size, m.embedding_dim)
        n_in = m.embedding_dim if shape.vocab_size is not None else shape.sequence[1]
        self.lstm = m.cell == "lstm"
        self.hidden = m.hidden
        self.dirs = 2 if m.bidirectional else 1
        self.dropout_p, self.embedding_dropout, self.recurrent_dropout = (
            m.dropout,
            m.embedding_dropout,
            m.recurrent_dropout,
        )
        cell: Callable[[int, int], nn.Module] = nn.LSTMCell if self.lstm else nn.GRUCell
        # One cell per layer and direction: the same four tensors as that layer of nn.GRU/LSTM.
        self.cells = nn.ModuleList()
        for _ in range(m.layers):
            self.cells.append(nn.ModuleList([cell(n_in, m.hidden) for _ in range(self.dirs)]))
            n_in = m.hidden * self.dirs
        self.drop = nn.Dropout(m.dropout)
        self.out = nn.Linear(n_in, shape.n_outputs)

    def _direction(self, cell: nn.Module, x: Tensor, valid: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """Step one cell over (B, T, in); a step past a sequence's length keeps its state, so the
        state left is the one at its last real step (reading backward, padding leaves it zero until
        the real steps begin). Returns every step's output (B, T, H) and the final state (B, H)."""
        b, t = x.shape[0], x.shape[1]
        h = x.new_zeros(b, self.hidden)
        c = x.new_zeros(b, self.hidden)
        mask = None
        if self.training and self.recurrent_dropout > 0:
            p = self.recurrent_dropout
            mask = x.new_empty(b, self.hidden).bernoulli_(1 - p) / (1 - p)  # one per sequence
        outs: list[Tensor] = [h] * t
        for i in range(t - 1, -1, -1) if reverse else range(t):
            h_in = h * mask if mask is not None else h
            if self.lstm:
                h_new, c_new = cell(x[:, i], (h_in, c))
                keep = valid[:, i : i + 1]
                c = torch.where(keep, c_new, c)
            else:
                h_new = cell(x[:, i], h_in)
                keep = valid[:, i : i + 1]
            h = torch.where(keep, h_new, h)
            outs[i] = h
        return torch.stack(outs, 1), h

    def _fused(
        self, cell: nn.RNNCellBase, x: Tensor, lengths: Tensor, reverse: bool
    ) -> tuple[Tensor, Tensor]:
        """What _direction computes without a recurrent mask, by the fused kernel: a sequence read
        backward is reversed within its length first, so that both directions read real steps
        first and their state at the last real one is the final state (what follows it, padding,
        reaches neither that state nor the next layer's real steps)."""
        b, t = x.shape[0], x.shape[1]
        order = reversed_within(lengths, t)[..., None] if reverse else None
        if order is not None:
            x = x.gather(1, order.expand_as(x))
        # nn.GRU/LSTM's own kernel (what their forward calls), given the cell's tensors: no second
        # copy of the weights, and a call tracing (TorchScript, ONNX) records as one GRU/LSTM op
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        h0 = x.new_zeros(1, b, self.hidden)
        if self.lstm:
            out = torch.lstm(x, [h0, h0], weights, True, 1, 0.0, self.training, False, True)[0]
        else:
            out = torch.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)[0]
        final = out.gather(1, (lengths - 1).view(b, 1, 1).expand(b, 1, self.hidden)).squeeze(1)
        if order is not None:
            out = out.gather(1, order.expand_as(out))
        return out, final

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        seq, lengths = self.input(x, lengths)
        seq = step_dropout(seq, self.embedding_dropout, self.training)
        valid = step_mask(lengths, seq.shape[1])
        stepped = self.training and self.recurrent_dropout > 0  # else no mask: the fused kernel
        finals: list[Tensor] = []
        for k, layer in enumerate(self.cells):
            directions = cast(nn.ModuleList, layer)
            if k > 0:
                seq = self.drop(seq)
            outs, finals = [], []
            for d, cell in enumerate(directions):
                if stepped:
                    out, h = self._direction(cell, seq, valid, reverse=d == 1)
                else:
                    out, h = self._fused(cast(nn.RNNCellBase, cell), seq, lengths, reverse=d == 1)
                outs.append(out)
                finals.append(h)
            seq = torch.cat(outs, -1)
        return self.out(self.drop(torch.cat(finals, -1)))


class TransformerModel(nn.Module):
    def __init__(self, m: TransformerSpec, shape: DataShape) -> None:
        super().__init__()
        assert shape.sequence is not None
        d = m.d_model
        self.input = SequenceInput(shape.vocab_size, d)
        self.project = nn.Linear(shape.sequence[1], d) if shape.vocab_size is None else None
        self.positions = nn.Embedding(m.max_length, d)
        layer = nn.TransformerEncoderLayer(d, m.heads, m.feedforward, m.dropout, batch_first=True)
        layer.self_attn.dropout = m.attention_dropout  # attention weights' own dropout rate
        self.encoder = nn.TransformerEncoder(layer, m.layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, shape.n_outputs)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        seq, lengths = self.input(x, lengths)
        if self.project is not None:
            seq = self.project(seq)
        t = seq.shape[1]
        seq = seq + self.positions(torch.arange(t, device=seq.device))[None]
        valid = step_mask(lengths, t)
        seq = self.encoder(seq, src_key_padding_mask=~valid)
        w = valid.unsqueeze(-1).to(seq.dtype)
        return self.out((seq * w).sum(1) / w.sum(1).clamp(min=1))


class Conv1dModel(nn.Module):
    def __init__(self, m: Conv1dSpec, shape: DataShape) -> None:
        super().__init__()
        assert shape.sequence is not None
        self.input = SequenceInput(shape.vocab_size, m.embedding_dim)
        c = m.embedding_dim if shape.vocab_size is not None else shape.sequence[1]
        convs: list[nn.Module] = []
        for ch in m.channels:
            convs += [nn.Conv1d(c, ch, m.kernel_size, padding=m.kernel_size // 2), nn.ReLU()]
            c = ch
        self.convs = nn.Sequential(*convs)
        head: list[nn.Module] = []
        for width in m.hidden:
            head += [nn.Linear(c, width), nn.ReLU()] + ([nn.Dropout(m.dropout)] if m.dropout > 0 else [])
            c = width
        head.append(nn.Linear(c, shape.n_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        seq, lengths = self.input(x, lengths)
        valid = step_mask(lengths, seq.shape[1])
        # Padding is zeroed before each convolution so that no real step reads it.
        w = valid.unsqueeze(1).to(seq.dtype)  # (B, 1, T)
        h = seq.transpose(1, 2) * w
        for layer in self.convs:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                h = h * w
        return self.head(h.sum(2) / w.sum(2).clamp(min=1))
