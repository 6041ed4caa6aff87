"""Text columns as token ids: fitted on the train rows only, bounded, kept as JSON and read back."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.data import datafile
from service.data.parsed import DataError
from worker.training import text
from worker.training.text import PAD_ID, UNK_ID, TextEncoder, TextError

TRAIN = ["The movie was GREAT!", "a bad movie", None, "great great fun", "   "]


def test_a_word_only_the_test_rows_hold_is_unk() -> None:
    enc = text.fit("review", TRAIN, max_length=6)
    vocab = enc.tokenizer.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert "zebra" not in vocab  # never seen in the train rows
    ids, lengths = enc.encode(["great zebra movie"])
    assert ids[0, :3].tolist() == [vocab["great"], UNK_ID, vocab["movie"]]
    assert ids[0, 3:].tolist() == [PAD_ID] * 3 and lengths.tolist() == [3]


def test_normalized_lowercase_and_nfkc_and_punctuation_split() -> None:
    enc = text.fit("review", ["great!"], max_length=4)
    vocab = enc.tokenizer.get_vocab()
    ids, lengths = enc.encode(["ＧＲＥＡＴ !"])  # full-width letters: NFKC, then lowercase
    assert ids[0, :2].tolist() == [vocab["great"], vocab["!"]] and lengths.tolist() == [2]


def test_padding_truncation_and_rows_without_tokens() -> None:
    enc = text.fit("review", ["a b c d e f g"], max_length=3)
    ids, lengths = enc.encode(["a b c d e", "a", "", None, float("nan"), "   "])
    assert ids.shape == (6, 3) and ids.dtype == np.int64 and lengths.dtype == np.int64
    assert lengths.tolist() == [3, 1, 1, 1, 1, 1]  # cut at max_length; an empty row is one [UNK]
    assert ids[1].tolist()[1:] == [PAD_ID, PAD_ID]
    assert ids[2:].tolist() == [[UNK_ID, PAD_ID, PAD_ID]] * 4
    assert int(ids.max()) < enc.vocab_size


def test_vocabulary_is_bounded_to_the_most_frequent_words() -> None:
    rows = ["common " * 5 + "rare" + str(i) for i in range(50)]
    enc = text.fit("review", rows, vocab_size=3)
    assert enc.vocab_size == 5  # 3 words + [PAD] + [UNK]
    assert "common" in enc.tokenizer.get_vocab()


def test_a_huge_value_is_cut_before_tokenizing() -> None:
    assert [len(v) for v in text._clean(["é" * (text.MAX_TEXT_CHARS + 10), 7])] == [text.MAX_TEXT_CHARS, 1]
    enc = text.fit("review", ["x"], max_length=text.MAX_SEQUENCE_LENGTH)
    _, lengths = enc.encode(["x " * (text.MAX_TEXT_CHARS * 4)])
    assert lengths.tolist() == [text.MAX_SEQUENCE_LENGTH]


@pytest.mark.parametrize("kwargs", [{"max_length": 0}, {"max_length": text.MAX_SEQUENCE_LENGTH + 1},
                                    {"vocab_size": 0}, {"vocab_size": text.MAX_VOCAB_SIZE + 1}])  # fmt: skip
def test_fit_bounds(kwargs: dict[str, int]) -> None:
    with pytest.raises(TextError):
        text.fit("review", TRAIN, **kwargs)


def test_round_trip_of_the_kept_json() -> None:
    enc = text.fit("review", TRAIN, max_length=5)
    kept = json.loads(json.dumps(enc.to_dict()))  # what the sidecar holds: plain JSON
    assert kept["format"] == text.FORMAT and kept["vocab_size"] == enc.vocab_size
    back = TextEncoder.from_dict(kept)
    rows = ["great movie zebra", "", "THE fun was bad!"]
    for a, b in zip(enc.encode(rows), back.encode(rows), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.column == "review" and back.max_length == 5


def _kept(**change: object) -> dict[str, object]:
    d: dict[str, object] = text.fit("review", TRAIN).to_dict()
    d.update(change)
    return d


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(_kept(format="regtrain-text/0"), id="format"),
        pytest.param(_kept(tokenizer='{"not": "a tokenizer"}'), id="not-a-tokenizer"),
        pytest.param(_kept(tokenizer="x" * (text.MAX_TOKENIZER_JSON + 1)), id="too-large"),
        pytest.param(_kept(max_length=text.MAX_SEQUENCE_LENGTH + 1), id="length"),
        pytest.param(_kept(max_length="5"), id="length-type"),
        pytest.param(_kept(column=None), id="column"),
    ],
)
def test_a_bad_kept_tokenizer_is_refused(kept: dict[str, object]) -> None:
    with pytest.raises(TextError):
        TextEncoder.from_dict(kept)


def test_a_kept_tokenizer_whose_specials_moved_is_refused() -> None:
    d = text.fit("review", TRAIN).to_dict()
    tok = json.loads(d["tokenizer"])
    vocab = tok["model"]["vocab"]
    vocab["[PAD]"], vocab["great"] = vocab["great"], vocab["[PAD]"]
    with pytest.raises(TextError, match="PAD"):
        TextEncoder.from_dict({**d, "tokenizer": json.dumps(tok)})


def test_the_canonical_file_keeps_each_string_columns_raw_values(tmp_path: Path) -> None:
    rows = ["Great movie!", "", '"bad, very bad"', "NA", "été"] * 4
    csv = "review,n,label\n" + "".join(f"{r},{i},{i % 2}\n" for i, r in enumerate(rows))
    data = datafile.parse_csv(csv.encode(), "label", max_rows=100, max_columns=10)
    expected = ["Great movie!", "", "bad, very bad", "", "été"] * 4  # gaps are empty
    assert data.text_values(0) == expected
    with pytest.raises(DataError, match="no text"):
        data.text_values(1)  # a number column
    datafile.save_canonical(data, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz", allow_pickle=False) as npz:
        assert npz["text_0"].dtype == np.uint8 and npz["text_0_offsets"].dtype == np.int64
    assert datafile.load_canonical(tmp_path / "d.npz").text_values(0) == expected

    table = pa.table({"review": ["a b", None, "c"] * 4, "label": [0, 1, 0] * 4})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    parquet = datafile.parse_parquet(buf.getvalue(), "label", max_rows=100, max_columns=10)
    assert parquet.text_values(0) == ["a b", "", "c"] * 4
