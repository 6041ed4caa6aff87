"""The Client: one regtrain server's jobs, checkpoints, predictions, events and sweeps."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO, overload

import httpx

from regtrain_client.errors import JobFailed
from regtrain_client.frames import EpochRows
from regtrain_client.models import (
    BatchPrediction,
    Checkpoint,
    Dataset,
    EpochMetrics,
    Job,
    LogLine,
    LogPage,
    Predictions,
    Sweep,
    Worker,
)
from regtrain_client.progress import EpochProgress
from regtrain_client.sse import Event, parse_sse
from regtrain_client.transport import RETRYABLE, Transport, raise_for_detail

DEFAULT_URL = "http://127.0.0.1:8000"
# The server comments every 15 s on a quiet stream: this long without a byte means a dead link.
STREAM_READ_TIMEOUT_S = 45.0


class Client:
    """A connection to one regtrain server.

    url defaults to $REGTRAIN_URL (else http://127.0.0.1:8000), api_key to $REGTRAIN_API_KEY.
    A request that fails to connect (or whose connection drops) is tried again up to `retries`
    times, waiting backoff, 2·backoff, 4·backoff, ... (at most max_backoff) in between; with
    `give_up_after_s`, a server that has never answered is given up on after that long."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        give_up_after_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or self.default_url()).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("REGTRAIN_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.transport = Transport(
            self.url, headers, timeout=timeout, retries=retries, backoff=backoff,
            max_backoff=max_backoff, give_up_after_s=give_up_after_s, transport=transport,
        )  # fmt: skip

    @staticmethod
    def default_url() -> str:
        """$REGTRAIN_URL, else http://127.0.0.1:8000."""
        return os.environ.get("REGTRAIN_URL") or DEFAULT_URL

    @property
    def http(self) -> httpx.Client:
        """The underlying httpx client (base URL and key set), for routes without a method."""
        return self.transport.http

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.transport.json(method, path, **kwargs)

    def _job(self, doc: dict[str, Any]) -> Job:
        job = Job.model_validate(doc)
        job._client = self
        return job

    def _sweep(self, doc: dict[str, Any]) -> Sweep:
        sweep = Sweep.model_validate(doc)
        sweep._client = self
        return sweep

    # --- jobs ---

    def submit(self, spec: dict[str, Any] | str | Path, *, idempotency_key: str | None = None) -> Job:
        """Queue a job (a JobSpec dict, or the path of a JSON file holding one). Retries reuse
        one Idempotency-Key, so a submit whose answer was lost never makes a second job."""
        key = idempotency_key or uuid.uuid4().hex
        body = load_spec(spec)
        return self._job(self._json("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key}))

    def validate(self, spec: dict[str, Any] | str | Path) -> dict[str, Any]:
        """Dry run: the filled spec, parameter count, memory estimate; nothing is queued."""
        return self._json("POST", "/v1/jobs:validate", json=load_spec(spec))

    def job(self, job_id: str) -> Job:
        return self._job(self._json("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, limit: int | None = None, page_size: int = 100) -> list[Job]:
        """Newest first, following the pagination cursor up to `limit` jobs (None: all)."""
        out: list[Job] = []
        cursor: str | None = None
        while limit is None or len(out) < limit:
            size = page_size if limit is None else min(page_size, limit - len(out))
            params: dict[str, Any] = {"limit": size}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = self._json("GET", "/v1/jobs", params=params)
            out += [self._job(doc) for doc in page["jobs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return out

    def cancel(self, job_id: str) -> Job:
        return self._job(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> None:
        """DELETE /v1/jobs/{id}: the finished job, its metrics, checkpoints and files."""
        self.transport.request("DELETE", f"/v1/jobs/{job_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        """DELETE /v1/datasets/{id} (Conflict while a queued or running job uses it)."""
        self.transport.request("DELETE", f"/v1/datasets/{dataset_id}")

    # --- datasets ---

    def datasets(self) -> list[Dataset]:
        """Uploads and registered datasets (newest first), then the built-in ones."""
        return [Dataset.model_validate(d) for d in self._json("GET", "/v1/datasets")["datasets"]]

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def upload(self, path: str | Path, *, target: str | None = None, task: str | None = None) -> Dataset:
        """POST /v1/datasets with a CSV, Parquet or NPZ file; train on it with
        `{"dataset": {"id": dataset.id}}`. Not retried: an upload is not idempotent."""
        source = Path(path)
        form = {k: v for k, v in (("target", target), ("task", task)) if v is not None}
        with source.open("rb") as f:
            r = self.http.post("/v1/datasets", files={"file": (source.name, f)}, data=form)
        raise_for_detail(r)
        return Dataset.model_validate(r.json())

    def register_dataset(
        self, uri: str, *, format: str | None = None, target: str | None = None, name: str | None = None
    ) -> Dataset:
        """POST /v1/datasets with a JSON body: a dataset by s3:// or https:// URI, read once by the server."""
        body = {k: v for k, v in (("uri", uri), ("format", format), ("target", target), ("name", name)) if v}
        return Dataset.model_validate(self._json("POST", "/v1/datasets", json=body))

    def metrics(self, job_id: str) -> EpochRows[EpochMetrics]:
        """One row per epoch; `.to_dataframe()` makes a DataFrame indexed by epoch."""
        rows = self._json("GET", f"/v1/jobs/{job_id}/metrics")["epochs"]
        return EpochRows(EpochMetrics.model_validate(r) for r in rows)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        rows = self._json("GET", f"/v1/jobs/{job_id}/checkpoints")["checkpoints"]
        return [Checkpoint.model_validate(r) for r in rows]

    def sidecar(self, job_id: str, name: str = "best") -> dict[str, Any]:
        """A checkpoint's JSON sidecar: spec, input_shape, classes, standardization, metrics."""
        return self._json("GET", f"/v1/jobs/{job_id}/checkpoints/{name}/sidecar")

    def download(
        self, job_id: str, name: str = "best", path: str | Path | None = None, *, sidecar: bool = True
    ) -> Path:
        """Save a checkpoint's safetensors file (default: ./{job_id}-{name}.safetensors) and,
        unless sidecar=False, its JSON sidecar beside it (same name, .json)."""
        target = Path(path) if path is not None else Path(f"{job_id}-{name}.safetensors")
        if sidecar:
            doc = self.sidecar(job_id, name)
            target.with_suffix(".json").write_text(json.dumps(doc, indent=1))

        def fetch() -> Path:
            with self.transport.stream("GET", f"/v1/jobs/{job_id}/checkpoints/{name}") as r:
                tmp = target.with_name(f".{target.name}.part")
                with tmp.open("wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                tmp.replace(target)
            return target

        return self.transport.retrying(fetch)

    @overload
    def predict(
        self, job_id: str, inputs: Any, checkpoint: str = "best", *, probabilities: Literal[False] = False
    ) -> list[Any]: ...
    @overload
    def predict(
        self, job_id: str, inputs: Any, checkpoint: str = "best", *, probabilities: Literal[True]
    ) -> Predictions: ...
    def predict(
        self, job_id: str, inputs: Any, checkpoint: str = "best", *, probabilities: bool = False
    ) -> list[Any] | Predictions:
        """Predictions of a trained job for raw inputs (the server standardizes them): class
        labels for classification, values in the target's units for regression. With
        `probabilities=True` (classification), a Predictions with each row's class
        probabilities in the order of its `classes`. Many rows are sent as several requests,
        each within the server's row and body limits, in order."""
        if hasattr(inputs, "tolist"):  # a numpy array
            inputs = inputs.tolist()
        labels: list[Any] = []
        proba: list[list[float]] = []
        doc: dict[str, Any] = {}
        for batch in predict_batches(list(inputs)):
            body = {"inputs": batch, "checkpoint": checkpoint, "probabilities": probabilities}
            doc = self._json("POST", f"/v1/jobs/{job_id}/predict", json=body)
            labels += doc["predictions"]
            proba += doc.get("probabilities") or []
        if not probabilities:
            return labels
        return Predictions.model_validate({**doc, "predictions": labels, "probabilities": proba})

    # --- batch predictions ---

    def score(
        self,
        job_id: str,
        dataset: dict[str, Any] | str,
        *,
        checkpoint: str = "best",
        format: Literal["csv", "parquet"] = "csv",
    ) -> BatchPrediction:
        """Score a dataset (an upload's id, or `{"uri": ...}`) with a job's checkpoint on a
        worker; poll with `batch_prediction`, fetch with `download_predictions`."""
        ref = {"id": dataset} if isinstance(dataset, str) else dataset
        body = {"dataset": ref, "checkpoint": checkpoint, "format": format}
        return BatchPrediction.model_validate(self._json("POST", f"/v1/jobs/{job_id}/predictions", json=body))

    def batch_prediction(self, job_id: str, prediction_id: str) -> BatchPrediction:
        return BatchPrediction.model_validate(
            self._json("GET", f"/v1/jobs/{job_id}/predictions/{prediction_id}")
        )

    def wait_batch_prediction(
        self, job_id: str, prediction_id: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> BatchPrediction:
        """The batch prediction once it has finished (TimeoutError after `timeout` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.batch_prediction(job_id, prediction_id)
            if found.finished:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch prediction {prediction_id} still {found.status}")
            time.sleep(poll_s)

    def download_predictions(self, job_id: str, prediction_id: str, path: str | Path) -> Path:
        """Write the batch prediction's file (CSV or Parquet) to `path`."""
        path = Path(path)
        with (
            self.transport.stream("GET", f"/v1/jobs/{job_id}/predictions/{prediction_id}/file") as r,
            path.open("wb") as f,
        ):
            for chunk in r.iter_bytes():
                f.write(chunk)
        return path

    def events(
        self, job_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """The job's Server-Sent Events until `done`. A dropped connection (or one silent for
        longer than three of the server's keep-alives) is resumed with Last-Event-ID, so no
        event is lost or repeated. TimeoutError after `timeout` seconds, if given."""
        return self._events("job", job_id, last_event_id, timeout)

    def sweep_events(
        self, sweep_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """The sweep's Server-Sent Events until `done`: `trial` (a trial started, ended an
        epoch, was pruned or ended) and `status`; resumed like `events`."""
        return self._events("sweep", sweep_id, last_event_id, timeout)

    def _events(
        self, kind: str, row_id: str, last_event_id: str | None, timeout: float | None
    ) -> Iterator[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        failures, since = 0, time.monotonic()
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            read_s = STREAM_READ_TIMEOUT_S
            if deadline is not None:
                read_s = max(min(read_s, deadline - time.monotonic()), 0.01)
            try:
                with self.transport.stream(
                    "GET",
                    f"/v1/{kind}s/{row_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=read_s),
                ) as r:
                    for event in parse_sse(r.iter_lines()):
                        failures, since = 0, time.monotonic()
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "done":
                            return
                        if deadline is not None and time.monotonic() > deadline:
                            raise TimeoutError(f"{kind} {row_id} not finished after {timeout} s")
            except RETRYABLE:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} {row_id} not finished after {timeout} s") from None
                if not self.transport.wait_before_retry(failures, since):
                    raise
                failures += 1
                continue
            # The server closed the stream without `done` (a restart): reconnect.

    def logs(self, job_id: str, cursor: str | None = None, *, limit: int | None = None) -> LogPage:
        """What the worker logged for the job, every attempt, from its first line (or after
        `cursor`, a page's `next_cursor`). Fewer than `limit` lines: all there are so far."""
        params: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
        if limit is not None:
            params["limit"] = limit
        return LogPage.model_validate(self._json("GET", f"/v1/jobs/{job_id}/logs", params=params))

    def follow_logs(self, job_id: str, *, timeout: float | None = None) -> Iterator[LogLine]:
        """The job's log lines, from its first, as they are written, until the job has finished
        (the `log` events of its event stream, resumed like `events`)."""
        for event in self.events(job_id, timeout=timeout):
            if event.event == "log":
                yield LogLine.model_validate(event.data)

    def wait(
        self,
        job_id: str,
        progress: bool | Callable[[EpochMetrics, Job], None] = False,
        *,
        timeout: float | None = None,
        check: bool = False,
        out: TextIO | None = None,
    ) -> Job:
        """See Job.wait."""
        shown: EpochProgress | None = None
        try:
            for event in self.events(job_id, timeout=timeout):
                if event.event == "epoch" and progress:
                    row = EpochMetrics.model_validate(event.data)
                    if callable(progress):
                        progress(row, self.job(job_id))
                        continue
                    if shown is None:
                        job = self.job(job_id)
                        shown = EpochProgress(out or sys.stderr, job.progress.epochs or None, job.name)
                    shown.update(row)
                elif event.event == "done":
                    job = self._job(event.data)
                    if check and job.status != "succeeded":
                        raise JobFailed(job)
                    return job
        finally:
            if shown is not None:
                shown.close()
        return self.job(job_id)  # pragma: no cover (events() returns only after done)

    # --- sweeps ---

    def submit_sweep(self, spec: dict[str, Any] | str | Path, *, idempotency_key: str | None = None) -> Sweep:
        """Queue a sweep (a SweepSpec dict, or the path of a JSON file holding one)."""
        key = idempotency_key or uuid.uuid4().hex
        body = load_spec(spec)
        return self._sweep(self._json("POST", "/v1/sweeps", json=body, headers={"Idempotency-Key": key}))

    def sweep(self, sweep_id: str) -> Sweep:
        return self._sweep(self._json("GET", f"/v1/sweeps/{sweep_id}"))

    def sweeps(self, status: str | None = None, limit: int = 20) -> list[Sweep]:
        """The newest sweeps (at most 100)."""
        params: dict[str, Any] = {"limit": min(limit, 100)}
        if status:
            params["status"] = status
        page = self._json("GET", "/v1/sweeps", params=params)
        return [self._sweep(doc) for doc in page["sweeps"]]

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return self._sweep(self._json("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    # --- the fleet ---

    def workers(self) -> list[Worker]:
        """The server's live worker processes (their queues, device, what they train)."""
        return [Worker.model_validate(doc) for doc in self._json("GET", "/v1/workers")["workers"]]


# The server's limits on one predict request: 10,000 rows and a 16 MiB body. Batches stay under
# both with room for the envelope and for httpx < 0.28's looser JSON (", " between values), so
# any number of rows goes through without a 413.
PREDICT_MAX_ROWS = 10_000
PREDICT_MAX_BYTES = 8_000_000


def predict_batches(rows: list[Any]) -> Iterator[list[Any]]:
    """Consecutive slices of `rows`, each at most PREDICT_MAX_ROWS rows and about
    PREDICT_MAX_BYTES of JSON (a single larger row goes alone: the server names its limit)."""
    batch: list[Any] = []
    size = 0
    for row in rows:
        row_bytes = len(json.dumps(row, separators=(",", ":"))) + 1
        if batch and (len(batch) >= PREDICT_MAX_ROWS or size + row_bytes > PREDICT_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_bytes
    if batch:
        yield batch


def load_spec(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A spec given as a dict, or as the path of a JSON file ("-": standard input)."""
    if isinstance(spec, dict):
        return spec
    text = sys.stdin.read() if str(spec) == "-" else Path(spec).read_text()
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{spec}: a spec is a JSON object")
    return doc
