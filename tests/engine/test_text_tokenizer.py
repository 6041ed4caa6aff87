"""Text columns as token ids: fitted on the train rows only, bounded, kept as JSON and read back."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from service.contract.spec import JobSpec
from service.data import datafile
from service.data.columns import ColumnsError, ColumnSummary, plan, takes_text, text_column
from service.data.parsed import DataError
from service.settings import Settings, get_settings
from worker import prediction_task
from worker.training import text
from worker.training.data import _split, cv_folds, split_and_standardize
from worker.training.export import export
from worker.training.inference import InputError, Predictor
from worker.training.loop import fit
from worker.training.text import PAD_ID, UNK_ID, TextEncoder, TextError

TRAIN = ["The movie was GREAT!", "a bad movie", None, "great great fun", "   "]


def test_a_word_only_the_test_rows_hold_is_unk() -> None:
    enc = text.fit("review", TRAIN, max_length=6)
    vocab = enc.tokenizer.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert "zebra" not in vocab  # never seen in the train rows
    ids, lengths = enc.encode(["great zebra movie"])
    assert ids[0, :3].tolist() == [vocab["great"], UNK_ID, vocab["movie"]]
    assert enc.max_length == 5  # the longest train row ("the movie was great !"), under 6
    assert ids[0, 3:].tolist() == [PAD_ID] * 2 and lengths.tolist() == [3]


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
    enc = text.fit("review", ["x " * (text.MAX_SEQUENCE_LENGTH + 5)], max_length=text.MAX_SEQUENCE_LENGTH)
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


def _corpus_csv(per_class: int = 20, *, extra: str = "") -> bytes:
    words = {"a": ["goal", "match", "team"], "b": ["bake", "sauce", "dinner"]}
    lines = [f"review,n,label{',' + extra if extra else ''}"]
    for i in range(per_class):
        for label, w in words.items():
            more = f",note {label}{i}" if extra else ""
            lines.append(f"the {w[i % 3]} {w[(i + 1) % 3]} day{i},{i},{label}{more}")
    return ("\n".join(lines) + "\n").encode()


def _text_spec(**dataset: object) -> JobSpec:
    return JobSpec.model_validate(
        {"dataset": {"id": "x", **dataset}, "model": {"type": "rnn", "hidden": 8, "embedding_dim": 8}}
    )


def test_a_text_dataset_is_token_ids_with_a_vocabulary_of_its_train_rows_only() -> None:
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10)
    spec = _text_spec()
    # a word only one row holds: after the split it is in exactly one of train and val/test
    values = data.text_values(0)
    prepared = split_and_standardize(spec, data)
    assert prepared.text is not None and prepared.preprocessing is None
    assert prepared.X_train.dtype == np.int64 and prepared.X_train.shape[1] == 4  # the longest train row
    assert prepared.shape.sequence == (4, 1) and prepared.shape.vocab_size == prepared.text["vocab_size"]
    encoder = TextEncoder.from_dict(prepared.text)
    s = spec.split
    train_idx, _, _ = _split(np.arange(len(values)), data.y, s.validation, s.test, s.seed)
    train_words = {w for i in train_idx for w in values[i].split()}
    assert set(encoder.tokenizer.get_vocab()) == {"[PAD]", "[UNK]"} | train_words
    assert len(values) == len(prepared.X_train) + len(prepared.X_val) + len(prepared.X_test)

    # a word that only rows outside the train split hold is [UNK] for them
    rows = values[:]
    _, _, test_idx = _split(np.arange(len(rows)), data.y, s.validation, s.test, s.seed)
    for i in test_idx:
        rows[i] = "zebra " + rows[i]
    raw = b"review,n,label\n" + b"".join(
        f"{r},{i},{'ab'[int(data.y[i])]}\n".encode() for i, r in enumerate(rows)
    )
    marked = split_and_standardize(spec, datafile.parse_csv(raw, "label", max_rows=1000, max_columns=10))
    assert marked.text is not None and "zebra" not in TextEncoder.from_dict(marked.text).tokenizer.get_vocab()
    assert (marked.X_test[:, 0] == UNK_ID).all()


def test_a_text_model_reads_one_text_column_and_leaves_the_others_out() -> None:
    summary = datafile.parse_csv(_corpus_csv(extra="note"), "label", max_rows=1000, max_columns=10).columns
    assert summary is not None and [ColumnSummary.from_dict(c).inferred for c in summary] == [
        "text",
        "numeric",
        "text",
    ]
    two = pytest.raises(ColumnsError, match="one text column")
    with two:
        plan(summary, None, max_features=100, text_model=True)
    planned = plan(summary, {"note": {"type": "drop"}}, max_features=100, text_model=True)
    assert [(p.name, p.type) for p in planned] == [("review", "text"), ("n", "drop"), ("note", "drop")]
    assert text_column(planned) == "review"
    with pytest.raises(ColumnsError, match="read by a text model"):  # a row model cannot read text
        plan(summary, {"review": {"type": "text"}}, max_features=100)
    transformer = JobSpec.model_validate({"dataset": {"id": "x"}, "model": {"type": "transformer"}}).model
    assert (
        takes_text(transformer)
        and takes_text(_text_spec().model)
        and not takes_text(JobSpec.model_validate({"dataset": {"id": "x"}, "model": {"type": "mlp"}}).model)
    )


def test_a_text_checkpoint_predicts_raw_strings_and_its_export_takes_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10)
    spec = JobSpec.model_validate(
        {"dataset": {"id": "x"}, "model": {"type": "rnn", "hidden": 8, "embedding_dim": 8},
         "training": {"epochs": 2, "device": "cpu"}}
    )  # fmt: skip
    fit(spec, split_and_standardize(spec, data), tmp_path)
    sidecar = json.loads((tmp_path / "checkpoints" / "final.json").read_text())
    assert TextEncoder.from_dict(sidecar["text"]).column == "review"
    weights = tmp_path / "checkpoints" / "final.safetensors"
    predictor = Predictor(weights, sidecar)
    rows: list[object] = ["the goal team", ["bake sauce"], {"review": "ZEBRA dinner"}, None, ""]
    labels, proba = predictor.predict_proba(rows)
    assert set(labels) <= {"a", "b"} and proba.shape == (5, 2)
    with pytest.raises(InputError, match="no 'review'"):
        predictor.predict([{"text": "goal"}])
    with pytest.raises(InputError, match="not a text"):
        predictor.predict([3.5])
    scripted = torch.jit.load(str(export(weights, sidecar, "torchscript", tmp_path / "m.pt")))
    texts = ["the goal team", "bake sauce", "ZEBRA dinner", None, ""]  # the rows' text, as a client has it
    ids = torch.from_numpy(TextEncoder.from_dict(sidecar["text"]).encode(texts)[0])
    with torch.no_grad():
        got = torch.softmax(scripted(ids), dim=1).numpy()
    np.testing.assert_allclose(got, proba, atol=1e-5)

    # batch scoring reads the dataset's raw strings of the text column, batch by batch
    monkeypatch.setattr(prediction_task, "BATCH", 7)
    out = tmp_path / "p.csv"
    assert (
        prediction_task.write_predictions(predictor, data, prediction_task._targets(data), out, "csv") == 40
    )
    table = pa_csv.read_csv(out)
    labels, proba = predictor.predict_proba(data.text_values(0))
    assert table.column("prediction").to_pylist() == labels
    scored = np.column_stack([table.column(f"p_{c}").to_numpy() for c in predictor.classes])
    np.testing.assert_allclose(scored, proba, atol=1e-6)
    assert data.text_values(0, 5, 9) == data.text_values(0)[5:9]


def test_each_cv_fold_learns_its_vocabulary_on_its_own_train_part() -> None:
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10)
    values = data.text_values(0)
    folds = cv_folds(_text_spec(), data, 3)
    vocabs = [set(TextEncoder.from_dict(f.text or {}).tokenizer.get_vocab()) for f in folds]
    assert len({frozenset(v) for v in vocabs}) > 1  # the day<i> words differ with the fold's rows
    for fold, vocab in zip(folds, vocabs, strict=True):
        assert fold.X_train.dtype == np.int64
        assert vocab <= {"[PAD]", "[UNK]"} | {w for v in values for w in v.split()}


def test_text_beyond_the_kept_bytes_cannot_be_read_as_text() -> None:
    # REGTRAIN_TEXT_MAX_BYTES as the parse takes it: the corpus's column holds more than 100
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10, max_text_bytes=100)
    assert data.texts is None
    assert data.columns is not None and data.columns[0]["text_kept"] is False  # the plan says why
    with pytest.raises(DataError, match="REGTRAIN_TEXT_MAX_BYTES"):
        split_and_standardize(_text_spec(), data)


@pytest.fixture
def text_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set REGTRAIN_TEXT_* for this process, as a worker's environment does."""

    def set_env(**values: int) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"REGTRAIN_{name.upper()}", str(value))
        get_settings.cache_clear()

    yield set_env
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_worker_fits_at_its_text_settings(text_settings: Callable[..., None]) -> None:
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10)
    longest = split_and_standardize(_text_spec(), data).input_shape[0]
    text_settings(text_max_tokens=3, text_max_vocabulary=4)
    prepared = split_and_standardize(_text_spec(), data)
    assert longest > 3 and prepared.input_shape == (3,) and prepared.X_train.shape[1] == 3
    encoder = TextEncoder.from_dict(prepared.text or {})
    assert encoder.max_length == 3 and encoder.vocab_size == 4 + 2  # the words, [PAD] and [UNK]
    assert prepared.shape.vocab_size == 6 and int(prepared.X_train.max()) < 6


def test_a_worker_parses_at_its_text_bytes_setting(text_settings: Callable[..., None]) -> None:
    text_settings(text_max_bytes=100)  # a parse given no bound keeps this process's
    data = datafile.parse_csv(_corpus_csv(), "label", max_rows=1000, max_columns=10)
    assert data.texts is None


def test_the_text_settings_stay_within_what_a_kept_tokenizer_may_hold() -> None:
    fields = Settings.model_fields
    bounds = {m.le for m in fields["text_max_tokens"].metadata if hasattr(m, "le")}
    assert bounds == {text.MAX_SEQUENCE_LENGTH}
    bounds = {m.le for m in fields["text_max_vocabulary"].metadata if hasattr(m, "le")}
    assert bounds == {text.MAX_VOCAB_SIZE}
    with pytest.raises(ValidationError):
        Settings(text_max_tokens=text.MAX_SEQUENCE_LENGTH + 1)
