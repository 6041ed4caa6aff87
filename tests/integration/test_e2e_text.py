"""Text classification against the live API and worker on both backends: a generated corpus
(3 topics × 300 rows, each row a few topic words among noise words) uploads as CSV, a GRU
(`model.type: "rnn"`) trains on its token ids to an accuracy far above chance (1/3), predicts raw
strings (plain, [string] and {column: string}, with probabilities), and its TorchScript export
takes the token ids the checkpoint's tokenizer gives; a sweep over embedding_dropout and l2 on
the text model finishes with a best trial."""

from __future__ import annotations

import io
import random
import time
from typing import Any

import numpy as np
import torch
from live_service import Service

TOPICS = {
    "sport": ["goal", "match", "team", "score", "coach", "league"],
    "food": ["recipe", "bake", "flavor", "sauce", "dinner", "spicy"],
    "tech": ["laptop", "software", "chip", "battery", "code", "screen"],
}
NOISE = ["the", "a", "was", "really", "today", "and", "very", "this", "it", "of", "my", "new"]


def corpus(per_class: int = 300, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for label, words in TOPICS.items():
        for _ in range(per_class):
            tokens = [rng.choice(words) for _ in range(rng.randint(2, 3))]
            tokens += [rng.choice(NOISE) for _ in range(rng.randint(3, 6))]
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    rng.shuffle(rows)
    return ("review,label\n" + "".join(f"{text},{label}\n" for text, label in rows)).encode()


def _upload(service: Service) -> str:
    r = service.http.post("/v1/datasets", files={"file": ("reviews.csv", corpus())}, data={"target": "label"})
    assert r.status_code == 201, r.text
    assert [(c["name"], c["type"]) for c in r.json()["columns"]] == [("review", "text")]
    return str(r.json()["id"])


def _spec(dataset_id: str, epochs: int, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "dataset": {"id": dataset_id},
        "model": model or {"type": "rnn", "cell": "gru", "hidden": 16, "embedding_dim": 16},
        "training": {"epochs": epochs, "batch_size": 32, "device": "cpu"},
        "split": {"validation": 0.2, "test": 0.2, "seed": 0},
    }


def test_a_gru_learns_text_predicts_raw_strings_and_exports(service: Service) -> None:
    dataset_id = _upload(service)
    spec = _spec(dataset_id, epochs=12)
    v = service.http.post("/v1/jobs:validate", json=spec)
    assert v.status_code == 200, v.text
    # a text column is refused to a row model, with the reason
    mlp = {
        **spec,
        "dataset": {"id": dataset_id, "columns": {"review": {"type": "text"}}},
        "model": {"type": "mlp"},
    }
    r = service.http.post("/v1/jobs", json=mlp)
    assert r.status_code == 422 and "read by a text model" in r.text, r.text

    job = service.submit(spec)
    done = service.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    accuracy = done["result"]["metrics"]["test_accuracy"]
    print(f"text GRU test accuracy: {accuracy:.3f} (chance 0.333)")
    assert accuracy >= 0.8

    rows: list[Any] = [
        "the coach said the team played a great match",
        ["my new laptop has a fast chip and a big screen"],
        {"review": "Bake the SAUCE until spicy, a zebra recipe"},  # capitals, a word never seen
    ]
    p = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": rows, "probabilities": True})
    assert p.status_code == 200, p.text
    body = p.json()
    assert body["predictions"] == ["sport", "tech", "food"], body
    assert body["classes"] == ["food", "sport", "tech"]
    proba = np.asarray(body["probabilities"])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    bad = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [{"comment": "goal"}]})
    assert bad.status_code == 422 and "no 'review'" in bad.text, bad.text

    # the export takes token ids; the tokenizer is the sidecar's `text` (Hugging Face tokenizers)
    from tokenizers import Tokenizer

    sidecar = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best/sidecar").json()
    text = sidecar["text"]
    assert text["column"] == "review" and text["pad_id"] == 0 and text["unk_id"] == 1
    tokenizer = Tokenizer.from_str(text["tokenizer"])
    t = int(text["max_length"])
    ids = np.zeros((3, t), np.int64)
    for i, s in enumerate(["the coach said the team played a great match",
                           "my new laptop has a fast chip and a big screen",
                           "Bake the SAUCE until spicy, a zebra recipe"]):  # fmt: skip
        got = tokenizer.encode(s, add_special_tokens=False).ids[:t] or [1]
        ids[i, : len(got)] = got
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "torchscript"})
    assert r.status_code == 200, r.text
    scripted = torch.jit.load(io.BytesIO(r.content))
    with torch.no_grad():
        exported = torch.softmax(scripted(torch.from_numpy(ids)), dim=1).numpy()
    np.testing.assert_allclose(exported, proba, atol=1e-5)


def test_a_sweep_over_embedding_dropout_and_l2_on_the_text_model_has_a_best_trial(service: Service) -> None:
    dataset_id = _upload(service)
    sweep = {
        "name": "text-grid",
        "base": _spec(dataset_id, epochs=3),
        "grid": {"model.embedding_dropout": [0.0, 0.2], "regularization.l2": [0.0, 0.0001]},
    }
    r = service.http.post("/v1/sweeps", json=sweep)
    assert r.status_code in (200, 201, 202), r.text
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + 400
    while True:
        got = service.http.get(f"/v1/sweeps/{sweep_id}").json()
        if got["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"sweep still {got['status']}"
        time.sleep(1)
    assert got["status"] == "succeeded", got.get("error")
    assert len(got["trials"]) == 4 and all(t["status"] == "succeeded" for t in got["trials"])
    best = got["best"]
    assert set(best["params"]) == {"model.embedding_dropout", "regularization.l2"}
    assert service.wait(best["job_id"], timeout=300)["status"] == "succeeded"


def test_a_transformer_learns_text_and_predicts_raw_strings(service: Service) -> None:
    transformer = {
        "type": "transformer",
        "d_model": 16,
        "heads": 2,
        "layers": 1,
        "feedforward": 32,
        "max_length": 128,
    }
    job = service.submit(_spec(_upload(service), epochs=12, model=transformer))
    done = service.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    accuracy = done["result"]["metrics"]["test_accuracy"]
    print(f"text transformer test accuracy: {accuracy:.3f} (chance 0.333)")
    assert accuracy >= 0.8
    rows = ["the coach said the team played a great match", {"review": "a spicy sauce recipe for dinner"}]
    p = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": rows})
    assert p.status_code == 200 and p.json()["predictions"] == ["sport", "food"], p.text
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "torchscript"})
    assert r.status_code == 200, r.text
    # ONNX has no operator for the fused encoder layer: a 409 that names it, never a 500
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "onnx"})
    assert r.status_code == 409 and "aten::" in r.json()["detail"] and "torchscript" in r.json()["detail"], (
        r.text
    )
