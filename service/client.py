"""The Python client of the regtrain API: httpx and pydantic only (no torch).

    from service.client import Client

    client = Client("http://127.0.0.1:8000")          # or REGTRAIN_URL / REGTRAIN_API_KEY
    job = client.submit({"dataset": {"name": "digits"}, "model": {"type": "mlp"}})
    job = job.wait(progress=True)                     # one line per epoch, then the final job
    rows = job.metrics()                              # [EpochMetrics(epoch=1, train_loss=...), ...]
    job.download("best", "digits.safetensors")

Results are typed (pydantic models that keep any field a newer server adds). An error answer
raises an ApiError subclass carrying the server's `detail`. Connection errors are retried with
exponential backoff; a submit sends an Idempotency-Key, so a retried submit never makes a
second job.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TextIO

import httpx
from pydantic import BaseModel, ConfigDict, PrivateAttr

DEFAULT_URL = "http://127.0.0.1:8000"
# The server comments every 15 s on a quiet stream: this long without a byte means a dead link.
STREAM_READ_TIMEOUT_S = 45.0
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


# --- errors --------------------------------------------------------------------------------


class ApiError(Exception):
    """The server answered with an error; `detail` is its `detail` field."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {format_detail(detail)}")
        self.status_code = status_code
        self.detail = detail


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class InvalidSpec(ApiError):
    """422: `detail` is a list of {"loc": [...], "msg": ...} naming each bad field."""


class TooManyRequests(ApiError):
    """429: the tenant is at its cap of active jobs; `retry_after_s` says when to try again."""

    retry_after_s: float | None = None


class Unavailable(ApiError):
    pass


_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidSpec,
    429: TooManyRequests,
    503: Unavailable,
}


class JobFailed(Exception):
    """Raised by wait(check=True) when a job ends failed or cancelled."""

    def __init__(self, job: Job) -> None:
        err = job.error
        why = f"{err.type}: {err.message}" if err else job.status
        super().__init__(f"job {job.id} {job.status}: {why}")
        self.job = job


def format_detail(detail: Any) -> str:
    """A 422's list of field errors as `body.training.epochs: msg; ...`; anything else as text."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


# --- typed results -------------------------------------------------------------------------


class _Doc(BaseModel):
    # A newer server may add fields: keep them rather than refuse the answer.
    model_config = ConfigDict(extra="allow")


class HistoryEntry(_Doc):
    status: str
    at: datetime
    attempt: int | None = None
    worker: str | None = None
    resumed_from_epoch: int | None = None
    message: str | None = None


class Progress(_Doc):
    epoch: int = 0
    epochs: int = 0
    fraction: float = 0.0


class JobError(_Doc):
    type: str
    message: str


class JobResult(_Doc):
    best_epoch: int | None = None
    metrics: dict[str, float | None] = {}
    weight_sparsity: float | None = None
    weight_l2_norm: float | None = None
    epochs_completed: int | None = None


class EpochMetrics(_Doc):
    """One row of GET /v1/jobs/{id}/metrics; validation/test fields depend on the task."""

    epoch: int
    train_loss: float | None = None
    data_loss: float | None = None
    penalty: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    seconds: float | None = None
    samples_per_second: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Checkpoint(_Doc):
    name: str
    epoch: int
    size_bytes: int
    sha256: str
    metrics: dict[str, Any] | None = None


class Event(BaseModel):
    """One Server-Sent Event of /v1/jobs/{id}/events: status, epoch, checkpoint or done."""

    event: str
    data: Any
    id: str | None = None


class _Handle(_Doc):
    _client: Client | None = PrivateAttr(None)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("this object was not made by a Client")
        return self._client


class Job(_Handle):
    """A job as GET /v1/jobs/{id} returns it, with methods to act on it."""

    id: str
    name: str | None = None
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    history: list[HistoryEntry] = []
    progress: Progress = Progress()
    latest_metrics: dict[str, Any] | None = None
    result: JobResult | None = None
    error: JobError | None = None
    spec: dict[str, Any] = {}

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return (end - self.started_at).total_seconds()

    def refresh(self) -> Job:
        return self.client.job(self.id)

    def metrics(self) -> list[EpochMetrics]:
        return self.client.metrics(self.id)

    def checkpoints(self) -> list[Checkpoint]:
        return self.client.checkpoints(self.id)

    def download(self, name: str = "best", path: str | Path | None = None, *, sidecar: bool = True) -> Path:
        return self.client.download(self.id, name, path, sidecar=sidecar)

    def sidecar(self, name: str = "best") -> dict[str, Any]:
        return self.client.sidecar(self.id, name)

    def cancel(self) -> Job:
        return self.client.cancel(self.id)

    def events(self, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        return self.client.events(self.id, last_event_id=last_event_id, timeout=timeout)

    def predict(self, inputs: Any, checkpoint: str = "best") -> list[Any]:
        return self.client.predict(self.id, inputs, checkpoint=checkpoint)

    def wait(
        self,
        progress: bool | Callable[[EpochMetrics, Job], None] = False,
        *,
        timeout: float | None = None,
        check: bool = False,
        out: TextIO | None = None,
    ) -> Job:
        """Follow the job's event stream until it finishes; returns the finished job.

        progress=True prints a line per epoch (to stderr, or `out`); a callable gets each
        epoch's row and the job instead. check=True raises JobFailed unless it succeeded."""
        return self.client.wait(self.id, progress=progress, timeout=timeout, check=check, out=out)


class Trial(_Doc):
    index: int | None = None
    params: dict[str, Any] = {}
    status: str | None = None
    metrics: dict[str, Any] | None = None
    score: float | None = None
    fold_scores: list[float] | None = None
    vectorized: bool | None = None
    error: JobError | None = None
    epochs_trained: int | None = None
    pruned_at_epoch: int | None = None
    reason: str | None = None
    progress: dict[str, Any] | None = None


class SweepBest(_Doc):
    index: int | None = None
    params: dict[str, Any] = {}
    metrics: dict[str, Any] | None = None
    score: float | None = None
    score_std: float | None = None
    job_id: str | None = None
    test_metrics: dict[str, Any] | None = None


class Sweep(_Handle):
    """A sweep as GET /v1/sweeps/{id} returns it."""

    id: str
    name: str | None = None
    status: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trials: list[Trial] = []
    leaderboard: list[int] = []
    best: SweepBest | None = None
    objective: dict[str, Any] = {}
    error: JobError | None = None
    spec: dict[str, Any] = {}
    units: list[dict[str, Any]] = []
    objectives: list[dict[str, Any]] = []
    pareto: list[int] | None = None
    warnings: list[str] = []
    study: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def events(self, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[Event]:
        """The sweep's Server-Sent Events (trial, status) until `done`; see Client.sweep_events."""
        return self.client.sweep_events(self.id, last_event_id=last_event_id, timeout=timeout)

    def refresh(self) -> Sweep:
        return self.client.sweep(self.id)

    def cancel(self) -> Sweep:
        return self.client.cancel_sweep(self.id)

    def best_job(self) -> Job | None:
        """The best trial retrained on train+validation data, once there is one."""
        if self.best is None or self.best.job_id is None:
            return None
        return self.client.job(self.best.job_id)

    def wait(
        self,
        progress: bool | Callable[[Sweep], None] = False,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        out: TextIO | None = None,
    ) -> Sweep:
        """Until the sweep finishes (it does once its best trial's retrain job has): progress=True
        prints a line as each trial starts, ends an epoch, is pruned or ends (from the sweep's
        events); a callable progress is called with the sweep whenever a trial ends."""
        if progress is True:
            total = int(self.spec.get("trials", 0)) if self.spec.get("space") else len(self.trials)
            ended: set[int] = set()
            for event in self.events(timeout=timeout):
                if event.event == "trial":
                    print(trial_event_line(event.data), file=out or sys.stderr, flush=True)
                    if (
                        event.data.get("status") in (*FINISHED, "pruned")
                        and event.data.get("event") != "started"
                    ):
                        ended.add(int(event.data["index"]))
                        line = f"sweep {self.id}: {len(ended)}/{total} trials finished"
                        print(line, file=out or sys.stderr, flush=True)
                elif event.event == "status":
                    print(f"sweep {self.id}: {event.data.get('status')}", file=out or sys.stderr, flush=True)
                elif event.event == "done":
                    return self.client._sweep(event.data)
            return self.refresh()
        deadline = None if timeout is None else time.monotonic() + timeout
        sweep, shown = self, -1
        while True:
            done = sum(t.status in FINISHED for t in sweep.trials)
            if done != shown:
                shown = done
                if callable(progress):
                    progress(sweep)
                elif progress:
                    print(sweep_progress_line(sweep), file=out or sys.stderr, flush=True)
            if sweep.finished:
                return sweep
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {self.id} still {sweep.status} after {timeout} s")
            time.sleep(poll)
            sweep = sweep.refresh()


# --- progress lines ------------------------------------------------------------------------

BAR_WIDTH = 20


def epoch_line(row: EpochMetrics | dict[str, Any], epochs: int | None) -> str:
    """`epoch  3/20 [###-----] train_loss 0.4100 val_loss 0.3800 val_accuracy 0.9100`."""
    r = row.model_dump() if isinstance(row, BaseModel) else dict(row)
    epoch = int(r["epoch"])
    head = f"epoch {epoch:>{len(str(epochs or epoch))}}"
    if epochs:
        filled = round(BAR_WIDTH * min(epoch / epochs, 1.0))
        head += f"/{epochs} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}]"
    shown = [k for k in ("train_loss", "val_loss") if r.get(k) is not None]
    # the validation metric: accuracy for classification, the first error measure otherwise
    shown += [k for k in ("val_accuracy", "val_r2", "val_mse", "val_mae") if r.get(k) is not None][:1]
    return " ".join([head, *(f"{k} {r[k]:.4f}" for k in shown)])


def trial_event_line(t: dict[str, Any]) -> str:
    """One line per trial event: started, an epoch, pruned, finished."""
    head = f"trial {t.get('index')}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in (t.get("params") or {}).items())
    status, p = t.get("status"), t.get("progress")
    if t.get("event") == "started":
        return f"{head} started: {params}"
    if p and (t.get("event") == "epoch" or (status == "running" and not t.get("event"))):
        values = ", ".join(f"{k} {_short(v)}" for k, v in p.items() if k not in ("fold", "epoch", "step"))
        return f"{head} fold {p.get('fold', 0) + 1} epoch {p.get('epoch')} (step {p.get('step')}): {values}"
    if status in ("running", "queued"):
        return f"{head} {status}: {params}"
    if status == "pruned":
        return f"{head} pruned at epoch {t.get('pruned_at_epoch')}: {t.get('reason')}"
    if status == "succeeded":
        return f"{head} succeeded: score {_short(t.get('score'))} ({t.get('epochs_trained')} epochs) {params}"
    error = t.get("error") or {}
    return f"{head} {status}" + (f": {error.get('type')}: {error.get('message')}" if error else "")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_progress_line(sweep: Sweep) -> str:
    done = sum(t.status in FINISHED for t in sweep.trials)
    line = f"sweep {sweep.id} {sweep.status}: {done}/{len(sweep.trials)} trials finished"
    if sweep.best is not None and sweep.best.metrics:
        line += "; best " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items())
    return line


# --- the client ----------------------------------------------------------------------------


class Client:
    """A connection to one regtrain server.

    url defaults to $REGTRAIN_URL (else http://127.0.0.1:8000), api_key to $REGTRAIN_API_KEY.
    A request that fails to connect (or whose connection drops) is tried again up to `retries`
    times, waiting backoff, 2·backoff, 4·backoff, ... (at most max_backoff) in between."""

    RETRYABLE: ClassVar[tuple[type[Exception], ...]] = (httpx.TransportError,)

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("REGTRAIN_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("REGTRAIN_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing ---

    def _sleep_before(self, attempt: int) -> None:
        time.sleep(min(self.backoff * 2**attempt, self.max_backoff))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except self.RETRYABLE:
                if attempt == self.retries:
                    raise
                self._sleep_before(attempt)
        _raise_for_detail(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

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

    def metrics(self, job_id: str) -> list[EpochMetrics]:
        rows = self._json("GET", f"/v1/jobs/{job_id}/metrics")["epochs"]
        return [EpochMetrics.model_validate(r) for r in rows]

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
        for attempt in range(self.retries + 1):
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/checkpoints/{name}") as r:
                    if r.status_code >= 400:
                        r.read()
                        _raise_for_detail(r)
                    tmp = target.with_name(f".{target.name}.part")
                    with tmp.open("wb") as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
                    tmp.replace(target)
                return target
            except self.RETRYABLE:
                if attempt == self.retries:
                    raise
                self._sleep_before(attempt)
        raise AssertionError("unreachable")

    def predict(self, job_id: str, inputs: Any, checkpoint: str = "best") -> list[Any]:
        """Predictions of a trained job for raw inputs (the server standardizes them): class
        labels for classification, values in the target's units for regression."""
        if hasattr(inputs, "tolist"):  # a numpy array
            inputs = inputs.tolist()
        body = {"inputs": inputs, "checkpoint": checkpoint}
        return self._json("POST", f"/v1/jobs/{job_id}/predict", json=body)["predictions"]

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
        epoch, was pruned or ended), `status`; resumed like `events`."""
        return self._events("sweep", sweep_id, last_event_id, timeout)

    def _events(
        self, kind: str, job_id: str, last_event_id: str | None, timeout: float | None
    ) -> Iterator[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            read_s = STREAM_READ_TIMEOUT_S
            if deadline is not None:
                read_s = max(min(read_s, deadline - time.monotonic()), 0.01)
            try:
                with self.http.stream(
                    "GET",
                    f"/v1/{kind}s/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=read_s),
                ) as r:
                    if r.status_code >= 400:
                        r.read()
                        _raise_for_detail(r)
                    for event in parse_sse(r.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "done":
                            return
                        if deadline is not None and time.monotonic() > deadline:
                            raise TimeoutError(f"{kind} {job_id} not finished after {timeout} s")
            except self.RETRYABLE:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} {job_id} not finished after {timeout} s") from None
                if failures >= self.retries:
                    raise
                self._sleep_before(failures)
                failures += 1
                continue
            # The server closed the stream without `done` (a restart): reconnect.

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
        epochs: int | None = None
        for event in self.events(job_id, timeout=timeout):
            if event.event == "epoch" and progress:
                if epochs is None:
                    epochs = int(self.job(job_id).progress.epochs)
                row = EpochMetrics.model_validate(event.data)
                if callable(progress):
                    progress(row, self.job(job_id))
                else:
                    print(epoch_line(row, epochs), file=out or sys.stderr, flush=True)
            elif event.event == "done":
                job = self._job(event.data)
                if check and job.status != "succeeded":
                    raise JobFailed(job)
                return job
        return self.job(job_id)  # pragma: no cover (events() returns only after done)

    # --- sweeps ---

    def submit_sweep(self, spec: dict[str, Any] | str | Path, *, idempotency_key: str | None = None) -> Sweep:
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


def load_spec(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A spec given as a dict, or as the path of a JSON file ("-": standard input)."""
    if isinstance(spec, dict):
        return spec
    text = sys.stdin.read() if str(spec) == "-" else Path(spec).read_text()
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{spec}: a spec is a JSON object")
    return doc


def _raise_for_detail(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    error = _ERRORS.get(response.status_code, ApiError)(response.status_code, detail)
    retry_after = response.headers.get("Retry-After", "")
    if isinstance(error, TooManyRequests) and retry_after.isdigit():
        error.retry_after_s = float(retry_after)
    raise error


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events of a text/event-stream (comments, i.e. keep-alives, are skipped)."""
    name, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                raw = "\n".join(data)
                try:
                    payload: Any = json.loads(raw)
                except ValueError:
                    payload = raw
                yield Event(event=name, data=payload, id=event_id)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
