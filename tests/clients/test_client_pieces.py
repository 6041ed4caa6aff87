"""regtrain_client's pieces that need no server: the SSE reader, error text, DataFrames,
progress (tqdm bar or plain lines) and how soon an unreachable server is given up on."""

from __future__ import annotations

import io
import json
import socket
import time

import httpx
import pytest
from regtrain_client import Client, EpochMetrics, EpochRows, Sweep, format_detail, parse_sse
from regtrain_client import progress as progress_mod
from regtrain_client.progress import EpochProgress, SweepProgress


def test_parse_sse_skips_comments_and_keeps_ids() -> None:
    lines = [": keep-alive", "event: epoch", "id: 7", 'data: {"epoch": 1}', "", "data: plain", ""]
    events = list(parse_sse(lines))
    # as the SSE standard says, an event without an id keeps the last one seen
    assert [(e.event, e.id, e.data) for e in events] == [
        ("epoch", "7", {"epoch": 1}),
        ("message", "7", "plain"),
    ]


def test_format_detail_names_each_field() -> None:
    detail = [{"loc": ["body", "training", "epochs"], "msg": "too small"}, {"msg": "bad"}]
    assert format_detail(detail) == "body.training.epochs: too small; bad"
    assert format_detail("no such job") == "no such job"


ROWS = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5 + e / 10,
         "generalization_gap": 0.2 / e, "new_field": e} for e in (1, 2, 3)]  # fmt: skip


def test_metrics_and_trials_to_dataframe() -> None:
    pytest.importorskip("pandas")
    frame = EpochRows(EpochMetrics.model_validate(r) for r in ROWS).to_dataframe()
    assert list(frame.index) == [1, 2, 3] and frame.index.name == "epoch"
    assert frame.loc[2, "val_loss"] == pytest.approx(0.6)
    assert list(frame["new_field"]) == [1, 2, 3]  # a field a newer server adds is kept
    sweep = Sweep.model_validate({"id": "s", "status": "succeeded", "trials": [
        {"index": i, "params": {"regularization.l2": l2}, "status": "succeeded",
         "metrics": {"val_accuracy": acc}, "score": acc, "vectorized": True}
        for i, (l2, acc) in enumerate([(0.0, 0.9), (1e-3, 0.95)])]})  # fmt: skip
    trials = sweep.to_dataframe()
    assert list(trials.index) == [0, 1]
    assert list(trials["regularization.l2"]) == [0.0, 1e-3] and list(trials["score"]) == [0.9, 0.95]


def test_progress_is_a_tqdm_bar_where_tqdm_is() -> None:
    pytest.importorskip("tqdm")
    out = io.StringIO()
    shown = EpochProgress(out, 3, "digits")
    for r in ROWS:
        shown.update(r)
    shown.close()
    assert shown.bar is not None and shown.bar.n == 3
    assert "digits" in out.getvalue() and "3/3" in out.getvalue() and "val_accuracy" in out.getvalue()


def test_progress_is_plain_lines_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "tqdm_class", lambda: None)
    out = io.StringIO()
    shown = EpochProgress(out, 3)
    for r in ROWS:
        shown.update(r)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"] and "train_loss" in lines[0]
    sweep = Sweep.model_validate({"id": "s1", "status": "running", "trials": [{"status": "succeeded"}, {}]})
    out = io.StringIO()
    SweepProgress(out).update(sweep)
    assert out.getvalue().strip() == "sweep s1 running: 1/2 trials finished"


def test_an_unreachable_server_is_given_up_on_in_time() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    client = Client(f"http://127.0.0.1:{port}", retries=10, backoff=0.2, give_up_after_s=1.0)
    with client, pytest.raises(httpx.ConnectError):
        client.job("x")
    assert 0.5 < time.monotonic() - t0 < 2.0  # tried again (0.2 + 0.4 s), then gave up


def test_a_server_that_answered_before_gets_every_retry() -> None:
    """give_up_after_s is for a server never reached: one that answered once (and then went
    away, as in a restart) is retried with the full backoff."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Once(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"epochs": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Once)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    client = Client(url, retries=3, backoff=0.2, give_up_after_s=0.3)
    with client:
        assert list(client.metrics("j")) == []
        server.shutdown()
        server.server_close()
        t0 = time.monotonic()
        with pytest.raises(httpx.TransportError):
            client.metrics("j")
        assert time.monotonic() - t0 > 1.0  # 0.2 + 0.4 + 0.8 s of backoff, past give_up_after_s


def test_predict_splits_rows_into_requests_within_the_servers_limits() -> None:
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert len(request.content) < 16 * 1024 * 1024 and len(body["inputs"]) <= 10_000
        seen.append(len(body["inputs"]))
        return httpx.Response(200, json={"predictions": [r[0] for r in body["inputs"]], "checkpoint": "best",
                                         "epoch": 1})  # fmt: skip

    rows = [[float(i)] + [0.123456789] * 63 for i in range(12_000)]  # ~12 MB of JSON, 12k rows
    with Client("http://regtrain.test", transport=httpx.MockTransport(answer)) as client:
        got = client.predict("job", rows)
    assert got == [float(i) for i in range(12_000)]  # every row once, in order
    assert len(seen) > 1 and sum(seen) == 12_000


def test_predict_with_probabilities_joins_the_requests_answers() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["probabilities"] is True
        n = len(body["inputs"])
        return httpx.Response(200, json={"predictions": [r[0] for r in body["inputs"]], "probabilities": [[0.25, 0.75]] * n,
                                         "classes": ["a", "b"], "checkpoint": "best", "epoch": 3})  # fmt: skip

    rows = [[float(i)] + [0.123456789] * 783 for i in range(1_500)]  # ~20 MB of JSON: several requests
    with Client("http://regtrain.test", transport=httpx.MockTransport(answer)) as client:
        got = client.predict("job", rows, probabilities=True)
    assert got.predictions == [float(i) for i in range(1_500)]
    assert got.probabilities is not None and len(got.probabilities) == 1_500
    assert got.classes == ["a", "b"] and got.epoch == 3
