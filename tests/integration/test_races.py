"""Racing clients against the real API process, on both backends: requests that contend for one
dataset or one job are fired together (one thread and one open connection each, released by a
barrier), ROUNDS rounds each, and every round has exactly one winner and no 500.

The one thing varied between rounds is how long the DELETE waits after the barrier (0 to a few
tens of ms), so that over the rounds it lands before, inside and after the other request's
window (a submit between its check of the dataset and its insert; an export between the read of
the checkpoint's row and of its file). No assertion depends on which side wins: `pytest -s`
prints the tally of each race."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_service import Service

pytestmark = pytest.mark.integration

ROUNDS = 30
# Each round of the reads race needs a trained job of its own: 12 rounds still cover each of the
# ten delays of the DELETE, for a fifth of the suite's time the 30 rounds took.
READ_ROUNDS = 12
CSV = b"a,b,y\n" + b"".join(f"{i * 0.1:.1f},{i % 5},{i % 2}\n".encode() for i in range(40))
SPEC: dict[str, Any] = {"model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}
Send = Callable[[httpx.Client], httpx.Response]


class Racers:
    """One client (connection kept open) and one thread per racer: `race` sends each request
    from its own thread, all released at once."""

    def __init__(self, url: str, n: int) -> None:
        self.clients = [httpx.Client(base_url=url, timeout=60) for _ in range(n)]
        for c in self.clients:
            c.get("/healthz")  # connected before the first race
        self.pool = ThreadPoolExecutor(n)

    def race(self, *sends: Send) -> list[httpx.Response]:
        barrier = threading.Barrier(len(sends))

        def go(i: int, send: Send) -> httpx.Response:
            barrier.wait()
            return send(self.clients[i])

        futures = [self.pool.submit(go, i, send) for i, send in enumerate(sends)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown()
        for c in self.clients:
            c.close()


@pytest.fixture
def racers(service: Service) -> Iterator[Racers]:
    r = Racers(service.url, 6)
    yield r
    r.close()


def later(delay_s: float, send: Send) -> Send:
    def delayed(http: httpx.Client) -> httpx.Response:
        time.sleep(delay_s)
        return send(http)

    return delayed


def delete(path: str, delay_s: float = 0.0) -> Send:
    return later(delay_s, lambda http: http.delete(path))


def get(path: str, **params: str) -> Send:
    return lambda http: http.get(path, params=params)


def post(path: str, body: Any) -> Send:
    return lambda http: http.post(path, json=body)


def upload(service: Service) -> str:
    r = service.http.post("/v1/datasets", files={"file": ("race.csv", CSV)}, data={"target": "y"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def no_500(responses: list[httpx.Response]) -> None:
    for r in responses:
        assert r.status_code < 500, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"


@pytest.mark.parametrize("kind", ["job", "sweep"])
def test_a_delete_and_a_submit_on_one_dataset_have_one_winner(
    service: Service, racers: Racers, kind: str
) -> None:
    """Either the submit is admitted and the DELETE answers 409 (the dataset is in use), or the
    DELETE wins and the submit answers 422 naming dataset.id: never both (a job admitted on a
    dataset that is gone, failing later), unless the admitted work had already ended when the
    DELETE looked."""
    tally: collections.Counter[tuple[int, int]] = collections.Counter()
    for i in range(ROUNDS):
        dataset_id = upload(service)
        spec = {**SPEC, "dataset": {"id": dataset_id}}
        if kind == "job":
            path, body, loc = "/v1/jobs", spec, ["body", "dataset", "id"]
        else:
            body = {"base": spec, "grid": {"regularization.l2": [0.0, 0.001]}}
            path, loc = "/v1/sweeps", ["body", "base", "dataset", "id"]
        deleted, submitted = racers.race(
            delete(f"/v1/datasets/{dataset_id}", (i % 6) * 0.004), post(path, body)
        )
        deleted_by = datetime.now(UTC)  # the DELETE has answered
        no_500([deleted, submitted])
        tally[deleted.status_code, submitted.status_code] += 1
        after = service.http.get(f"/v1/datasets/{dataset_id}").status_code
        if deleted.status_code == 204 and submitted.status_code == 202:
            # Legitimate only if the work had ended before the DELETE looked: a one-epoch job
            # can, where the DELETE waited behind the worker's writes (SQLite's write lock, on
            # loaded cores). It then trained on the dataset and succeeded before it was gone.
            made = submitted.json()["id"]
            ended = service.http.get(f"{path}/{made}").json()
            assert ended["status"] == "succeeded", ended
            assert datetime.fromisoformat(ended["finished_at"]) <= deleted_by, (ended, deleted_by)
            assert after == 404
        elif deleted.status_code == 204:
            assert submitted.status_code == 422, submitted.text
            assert [d["loc"] for d in submitted.json()["detail"]] == [loc]
            assert after == 404
        else:
            assert (deleted.status_code, submitted.status_code) == (409, 202), (deleted.text, submitted.text)
            assert after == 200
            made = submitted.json()["id"]
            service.http.post(f"{path}/{made}/cancel")  # nothing left to train on the worker
    print(f"\n{service.backend:8} DELETE dataset vs POST {path}: (delete, submit) → rounds {dict(tally)}")
    assert sum(tally.values()) == ROUNDS


def test_two_deletes_of_one_dataset_one_204_one_404(service: Service, racers: Racers) -> None:
    for _ in range(ROUNDS):
        dataset_id = upload(service)
        answers = racers.race(*[delete(f"/v1/datasets/{dataset_id}")] * 2)
        no_500(answers)
        assert sorted(r.status_code for r in answers) == [204, 404], [r.text for r in answers]


def finished_jobs(service: Service, n: int, spec: dict[str, Any], *, cancel: bool) -> list[str]:
    """`n` jobs of `spec`, each finished (cancelled at once when `cancel`: most never start)."""
    ids = [service.submit(spec)["id"] for _ in range(n)]
    if cancel:
        for job_id in ids:
            service.http.post(f"/v1/jobs/{job_id}/cancel")
    for job_id in ids:
        service.wait(job_id, timeout=120)
    return ids


def test_two_deletes_of_one_job_one_204_one_404(service: Service, racers: Racers) -> None:
    job_ids = finished_jobs(service, ROUNDS, {**SPEC, "dataset": {"name": "iris"}}, cancel=True)
    for job_id in job_ids:
        answers = racers.race(*[delete(f"/v1/jobs/{job_id}")] * 2)
        no_500(answers)
        assert sorted(r.status_code for r in answers) == [204, 404], [r.text for r in answers]


def test_reads_of_a_jobs_files_racing_its_delete_answer_200_or_404(service: Service, racers: Racers) -> None:
    """An export (made on first request: the slow one), a download, a prediction and a sidecar
    racing the job's DELETE: each answers 200 or 404 (its file gone meanwhile), never a 500,
    and once all have answered nothing of the job is left in the data dir (an export made while
    the job was deleted does not put its file back for good)."""
    spec = {**SPEC, "dataset": {"name": "iris"}, "training": {"epochs": 2}}
    job_ids = finished_jobs(service, READ_ROUNDS, spec, cancel=False)
    jobs_dir = Path(service.env["REGTRAIN_DATA_DIR"]) / "jobs"
    tally: collections.Counter[tuple[int, ...]] = collections.Counter()
    for i, job_id in enumerate(job_ids):
        base = f"/v1/jobs/{job_id}"
        answers = racers.race(
            delete(base, (i % 10) * 0.02),
            get(f"{base}/checkpoints/best", format="onnx" if i % 2 else "torchscript"),
            get(f"{base}/checkpoints/final"),
            post(f"{base}/predict", {"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
            get(f"{base}/checkpoints/best/sidecar"),
        )
        no_500(answers)
        assert answers[0].status_code == 204, answers[0].text
        assert all(r.status_code in (200, 404) for r in answers[1:]), [r.text for r in answers]
        tally[tuple(r.status_code for r in answers[1:])] += 1
        assert not (jobs_dir / job_id).exists(), sorted(p.name for p in (jobs_dir / job_id).rglob("*"))
    print(f"\n{service.backend:8} DELETE job vs (export, download, predict, sidecar): {dict(tally)}")
