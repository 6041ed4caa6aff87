"""Text columns as token ids: a word vocabulary learned on the train split only, kept as JSON.

Hugging Face `tokenizers` (Rust) does the work: NFKC then lowercase, words and punctuation runs
split apart (`Whitespace`: `\\w+|[^\\w\\s]+`), a `WordLevel` vocabulary of the most frequent words
of the train rows. Ids 0 and 1 are `[PAD]` and `[UNK]`: a word the train rows never held (one only
the validation or test rows, or a predict request, hold) is `[UNK]`, as for a new row.

A column of N values becomes `ids` (int64, N×T, `[PAD]` after each row's tokens, T the
`max_length`: the fit's bound, or the longest train row when shorter) and `lengths` (int64, N, 1..T) for the model's masking or packing. A value with no
token at all (empty, a gap, only spaces) is one `[UNK]` (length 1): every row has a token, so a
packed GRU or a mean over the mask never divides by zero.

What is kept with the checkpoint (its sidecar's `text`, plain JSON, never a pickle):

    {"format": "regtrain-text/1", "column": "review", "max_length": 128,
     "pad_id": 0, "unk_id": 1, "vocab_size": 5002,
     "tokenizer": "<the tokenizer's own JSON (Tokenizer.to_str())>"}

Loading it (`TextEncoder.from_dict`) parses that JSON with the library's Rust deserializer: data,
never code, and its size, vocabulary and special ids are checked against the bounds here
before it is used. Bounds: MAX_TEXT_CHARS characters of a value are tokenized (a longer one is
cut first, so one huge cell costs at most that); a fit keeps REGTRAIN_TEXT_MAX_TOKENS tokens a
row and REGTRAIN_TEXT_MAX_VOCABULARY words (service.data.columns.TextBounds: the process's
settings, what the API planned the job at), never more than what a kept tokenizer may hold
anywhere: MAX_SEQUENCE_LENGTH tokens, MAX_VOCAB_SIZE words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from service.data.columns import TextBounds

FORMAT = "regtrain-text/1"
PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
# The most tokens a row keeps (the rest of a longer text is cut; the model's input is N×T) and
# words a vocabulary keeps (the specials excluded: bounds the embedding table and the JSON kept
# with every checkpoint) that any server fits or loads: the ceilings of the settings
# REGTRAIN_TEXT_MAX_TOKENS and _MAX_VOCABULARY, which choose what a fit keeps below them.
MAX_SEQUENCE_LENGTH = 512
MAX_VOCAB_SIZE = 50_000
# Characters of one value that are tokenized (a longer one is cut before): with MAX_SEQUENCE_LENGTH
# tokens kept, the rest would be thrown away anyway, and one huge cell costs no more than this.
MAX_TEXT_CHARS = 16_384
# A tokenizer JSON larger than this is refused before it is parsed (a vocabulary of MAX_VOCAB_SIZE
# words of MAX_TEXT_CHARS characters is far beyond what a fit makes; words are short).
MAX_TOKENIZER_JSON = 8 << 20


class TextError(ValueError):
    """A text column or a kept tokenizer that cannot be used, with the reason."""


def _clean(values: Sequence[Any]) -> list[str]:
    """Each value as the text tokenized: a gap (None, NaN) is empty, a long value cut."""
    out: list[str] = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append("")
        else:
            out.append(str(v)[:MAX_TEXT_CHARS])
    return out


def _blank_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab={PAD: PAD_ID, UNK: UNK_ID}, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@dataclass
class TextEncoder:
    """A fitted tokenizer for one text column, and the length its rows are padded or cut to."""

    column: str
    tokenizer: Tokenizer
    max_length: int

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table: every id encode() gives is below this."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """`ids` (int64, N×max_length, [PAD] after the tokens) and `lengths` (int64, 1..max_length)."""
        texts = _clean(values)
        n, t = len(texts), self.max_length
        ids = np.full((n, t), PAD_ID, dtype=np.int64)
        lengths = np.ones(n, dtype=np.int64)
        ids[:, 0] = UNK_ID  # a row with no token at all keeps one [UNK]
        for i, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            row = enc.ids[:t]
            if row:
                ids[i, : len(row)] = row
                lengths[i] = len(row)
        return ids, lengths

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "column": self.column,
            "max_length": self.max_length,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer.to_str(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextEncoder:
        """A kept encoder, checked against the bounds before use (the JSON is read as data)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TextError(f"not a {FORMAT} tokenizer")
        raw, column, max_length = d.get("tokenizer"), d.get("column"), d.get("max_length")
        if not isinstance(raw, str) or len(raw) > MAX_TOKENIZER_JSON:
            raise TextError(f"the tokenizer JSON is missing or over {MAX_TOKENIZER_JSON} characters")
        if not isinstance(column, str) or not isinstance(max_length, int):
            raise TextError("the tokenizer's column or max_length is missing")
        if not 1 <= max_length <= MAX_SEQUENCE_LENGTH:
            raise TextError(f"max_length {max_length} is outside 1..{MAX_SEQUENCE_LENGTH}")
        try:
            tok = Tokenizer.from_str(raw)
        except Exception as e:  # the Rust deserializer's error: the JSON is not a tokenizer
            raise TextError(f"not a tokenizer: {str(e)[:200]}") from None
        if tok.get_vocab_size(with_added_tokens=True) > MAX_VOCAB_SIZE + 2:
            raise TextError(f"the tokenizer's vocabulary is over {MAX_VOCAB_SIZE} words")
        if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:
            raise TextError(f"the tokenizer's {PAD} and {UNK} are not ids {PAD_ID} and {UNK_ID}")
        return cls(column, tok, max_length)


def fit(
    column: str,
    train_values: Sequence[Any],
    *,
    max_length: int | None = None,
    vocab_size: int | None = None,
    min_frequency: int = 1,
) -> TextEncoder:
    """The vocabulary of the train rows' most frequent words (call it with the train split only).
    `max_length` and `vocab_size` default to this process's REGTRAIN_TEXT_MAX_TOKENS and
    REGTRAIN_TEXT_MAX_VOCABULARY."""
    bounds = TextBounds.of()
    max_length = bounds.max_tokens if max_length is None else max_length
    vocab_size = bounds.max_vocabulary if vocab_size is None else vocab_size
    if not 1 <= max_length <= MAX_SEQUENCE_LENGTH:
        raise TextError(f"max_length {max_length} is outside 1..{MAX_SEQUENCE_LENGTH}")
    if not 1 <= vocab_size <= MAX_VOCAB_SIZE:
        raise TextError(f"vocab_size {vocab_size} is outside 1..{MAX_VOCAB_SIZE}")
    tok = _blank_tokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size + 2,  # the trainer counts the specials in its size
        min_frequency=min_frequency,
        special_tokens=[PAD, UNK],
        show_progress=False,
    )
    texts = _clean(train_values)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:  # the trainer's contract
        raise TextError("the tokenizer did not keep its special tokens first")
    # T is the longest train row's tokens when that is shorter (short texts: no steps that are
    # all padding); a longer row at predict is cut, as one over max_length is.
    longest = max((len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)), default=1)
    return TextEncoder(column, tok, max(1, min(max_length, longest)))
