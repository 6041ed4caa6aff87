"""MLflow tracking: each job a run in the operator's MLflow (REGTRAIN_MLFLOW_TRACKING_URI), a
sweep a parent run with one nested run per trial, and a job that succeeded with
`tracking.mlflow.register_as` (a sweep's winner: its retrained best trial) a registered model
version, whose source is the run's `model` artifacts (the best checkpoint's safetensors and
sidecar).

What is sent comes from the store, through the outbox (store/mlflow_runs.py): the claim, each
epoch and the end of a job mark its row in their own transactions, and this process's sender
(a daemon thread in the API and in every worker) brings the run up to date from the store. A
tracker that is down or slow only delays the runs: the sender retries with backoff, and no
training step ever waits on it.

MLflow's REST API through httpx, not the `mlflow` package: the handful of endpoints used here
(experiments get-by-name/create, runs search/create/log-batch/update/get, registered-models and
model-versions create/search, the mlflow-artifacts proxy's PUT) cost no dependency, while
`mlflow` (or even `mlflow-skinny`) would bring its own pins on pandas, pyarrow, protobuf and
more into the API's process and the worker's image. `mlflow` is a dev dependency only, for the
real server the tests run.

The tracker's address is the operator's alone; a tenant names only an experiment and a model,
checked by the JobSpec (letters, digits, space, `.`, `_`, `-`, up to 100) and, on a server with
API keys, prefixed with the tenant (`{tenant}/{experiment}`, `{tenant}.{model}`), so that no
tenant writes into another's experiment or registers a version of another's model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.settings import Settings
from service.store import Repository
from service.store.artifacts import ArtifactMissing, Artifacts, checkpoint_key
from service.store.leased import FINISHED
from service.store.mlflow_runs import MlflowRuns, Tracked
from service.store.sweeps import TRIAL_FINISHED

log = logging.getLogger("regtrain.mlflow")

TIMEOUT = httpx.Timeout(10.0, connect=3.0)  # a tracker that hangs holds one send, never a job
UPLOAD_TIMEOUT = httpx.Timeout(120.0, connect=3.0)
BACKOFF_S = (1, 2, 4, 8, 15, 30, 60, 120, 300)  # then every 300 s, up to MAX_ATTEMPTS
MAX_ATTEMPTS = 30  # failures in a row (about two hours) before a run is given up on
LEASE_S = 120.0
POLL_S = 1.0  # how often a sender looks for rows that other processes made due
SWEEP_POLL_S = 2.0  # how often a running sweep's new trials are sent
PURGE_EVERY_S = 600.0
BATCH = 8  # rows claimed at once
TRIALS_PER_SEND = 16  # a sweep's trial runs made in one send (about 4 requests each)

# MLflow's limits (REST API, log-batch): per request, and a param's value.
MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000
MAX_VALUE = 6000

RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "pruned": "FINISHED"}
_RETRAIN_KEY = re.compile(r"^sweep-([0-9a-f]{32})-best$")  # sweep_task._retrain's idempotency key


class TrackerError(Exception):
    """MLflow said no, or could not be reached. `retry`: worth another try later."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Later(Exception):
    """Not yet, and not a failure (a retrain job whose sweep has no run yet)."""


def _ms(at: datetime | None) -> int:
    return int((at or datetime.now(UTC)).timestamp() * 1000)


def _value(v: Any) -> str:
    text = json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)
    return text[:MAX_VALUE]


def flat_params(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params: nested fields by their path (`regularization.l2`, the keys a
    sweep's grid uses), lists as JSON (`model.hidden` = `[64,32]`); lists of objects (a
    sequential model's layers) by index. `notify` and `tracking` are left out: a webhook's URL
    may carry a token, and neither is a hyperparameter."""
    out: dict[str, str] = {}
    for key, v in doc.items():
        if not prefix and key in ("notify", "tracking"):
            continue
        path = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flat_params(v, f"{path}."))
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            out.update(flat_params({str(i): x for i, x in enumerate(v)}, f"{path}."))
        else:
            out[path] = _value(v)
    return out


def numeric(doc: dict[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics document, nested ones by path (`per_class.0.f1`); lists
    (a confusion matrix) and flags are not metrics."""
    out: dict[str, float] = {}
    for key, v in (doc or {}).items():
        # a class label is any text, MLflow's metric names are not: it refuses the whole batch
        # for one name outside [/\w.\- :] (a label "Adelie (Pygoscelis)"), or one that a path
        # would normalize ("a//b"): no slash either
        key = re.sub(r"[^\w.\- ]", "_", str(key))
        if isinstance(v, dict):
            out.update(numeric(v, f"{prefix}{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}{key}"] = float(v)
    return out


def _tags(tags: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": _value(v)} for k, v in tags.items() if v is not None]


class MlflowClient:
    """The few REST calls regtrain makes, each raising TrackerError when it fails."""

    def __init__(self, uri: str) -> None:
        self.http = httpx.Client(base_url=uri.rstrip("/"), timeout=TIMEOUT, trust_env=False)
        self._experiments: dict[str, str] = {}

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise TrackerError(f"{method} {path}: {type(e).__name__}: {e}", retry=True) from None
        if r.status_code < 300:
            return r.json() if r.content else {}
        try:
            body = r.json()
        except ValueError:
            body = {"message": r.text[:300]}
        error = TrackerError(
            f"{method} {path}: {r.status_code} {body.get('error_code', '')}: {body.get('message', '')}"[
                :2000
            ],
            retry=r.status_code >= 500 or r.status_code in (408, 429),
        )
        error.code = body.get("error_code")  # type: ignore[attr-defined]
        raise error

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/2.0/mlflow/{path}", json=body)

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", f"/api/2.0/mlflow/{path}", params=params)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, made if it does not exist yet."""
        if name in self._experiments:
            return self._experiments[name]
        for _ in range(2):
            try:
                found = self._get("experiments/get-by-name", experiment_name=name)["experiment"]
                if found.get("lifecycle_stage") == "deleted":
                    raise TrackerError(f"experiment {name!r} is deleted in MLflow", retry=False)
                experiment_id = str(found["experiment_id"])
                break
            except TrackerError as e:
                if getattr(e, "code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise
            try:
                experiment_id = str(self._post("experiments/create", {"name": name})["experiment_id"])
                break
            except TrackerError as e:  # made meanwhile by another sender: read it
                if getattr(e, "code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
        else:
            raise TrackerError(f"experiment {name!r}: neither found nor made", retry=True)
        self._experiments[name] = experiment_id
        return experiment_id

    def run_tagged(self, experiment_id: str, **tags: str) -> dict[str, Any] | None:
        """The run with these regtrain tags (`kind="job"` is tag regtrain.kind), made by a try
        whose answer was lost, or None. The values are server-made ids, never a tenant's text."""
        where = " and ".join(f"tags.`regtrain.{k}` = '{v}'" for k, v in tags.items())
        found = self._post(
            "runs/search", {"experiment_ids": [experiment_id], "filter": where, "max_results": 1}
        )
        runs = found.get("runs") or []
        return runs[0]["info"] if runs else None

    def create_run(
        self, experiment_id: str, name: str, start: datetime | None, tags: dict[str, Any]
    ) -> dict[str, Any]:
        body = {
            "experiment_id": experiment_id,
            "run_name": name,
            "start_time": _ms(start),
            "tags": _tags(tags),
        }
        return dict(self._post("runs/create", body)["run"]["info"])

    def artifact_uri(self, run_id: str) -> str:
        return str(self._get("runs/get", run_id=run_id)["run"]["info"]["artifact_uri"])

    def log(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: list[tuple[str, float, int, int]] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Params, metrics (key, value, step, timestamp in ms) and tags, in as many log-batch
        calls as MLflow's limits need. Params are written once: the same value again is fine."""
        items = list((params or {}).items())
        for i in range(0, len(items), MAX_PARAMS):
            chunk = [{"key": k[:250], "value": v} for k, v in items[i : i + MAX_PARAMS]]
            self._post("runs/log-batch", {"run_id": run_id, "params": chunk})
        points = metrics or []
        for i in range(0, len(points), MAX_METRICS):
            chunk2 = [
                {"key": k, "value": v, "step": s, "timestamp": t}
                for k, v, s, t in points[i : i + MAX_METRICS]
            ]
            self._post("runs/log-batch", {"run_id": run_id, "metrics": chunk2})
        tag_list = _tags(tags or {})
        for i in range(0, len(tag_list), MAX_TAGS):
            self._post("runs/log-batch", {"run_id": run_id, "tags": tag_list[i : i + MAX_TAGS]})

    def end_run(self, run_id: str, status: str, end: datetime | None) -> None:
        self._post("runs/update", {"run_id": run_id, "status": status, "end_time": _ms(end)})

    def upload(self, artifact_uri: str, path: str, size: int, chunks: Iterator[bytes]) -> None:
        """A file into the run's artifacts through the server's artifact proxy (`mlflow server`
        with --artifacts-destination: run artifact URIs are mlflow-artifacts:/…)."""
        if not artifact_uri.startswith("mlflow-artifacts:"):
            raise TrackerError(
                f"the tracker stores artifacts at {artifact_uri.split(':', 1)[0]}:, which regtrain "
                "cannot upload to; serve them through the tracker (mlflow server --artifacts-destination)",
                retry=False,
            )
        # mlflow-artifacts:/1/<run>/artifacts, or with a host: mlflow-artifacts://host/1/<run>/…
        rest = artifact_uri.removeprefix("mlflow-artifacts:")
        rest = rest.removeprefix("//").partition("/")[2] if rest.startswith("//") else rest.lstrip("/")
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        self._call(
            "PUT",
            f"/api/2.0/mlflow-artifacts/artifacts/{rest}/{path}",
            content=chunks,
            headers=headers,
            timeout=UPLOAD_TIMEOUT,
        )

    def register(self, name: str, source: str, run_id: str) -> str:
        """A version of registered model `name` from the run (the one registered already, if a
        try whose answer was lost made it): its version number."""
        try:
            self._post("registered-models/create", {"name": name})
        except TrackerError as e:
            if getattr(e, "code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        found = self._get("model-versions/search", filter=f"name='{name}' and run_id='{run_id}'")
        for version in found.get("model_versions") or []:
            return str(version["version"])
        made = self._post("model-versions/create", {"name": name, "source": source, "run_id": run_id})
        return str(made["model_version"]["version"])

    def close(self) -> None:
        self.http.close()


class MlflowSender:
    """Brings the outbox's due rows' runs up to date, one row at a time, on a daemon thread of
    its own (started at once: rows that a dead process left are sent by whoever is alive)."""

    def __init__(self, settings: Settings, store: Repository) -> None:
        assert settings.mlflow_tracking_uri
        self.settings = settings
        self.store = store
        self.runs = MlflowRuns(store.engine)
        self.client = MlflowClient(settings.mlflow_tracking_uri)
        self.artifacts = Artifacts(settings)
        self.tenant_names = bool(settings.api_keys)  # a multi-tenant server: names by tenant
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="regtrain-mlflow", daemon=True)
                self._thread.start()

    def on_change(self, job_id: str, method: str, out: Any) -> None:
        """A store listener: a tracked job's claim, epoch or end wakes the sender."""
        if out and method in ("claim", "record_epoch", "finish"):
            self._wakeup.set()

    def _run(self) -> None:
        purged_at = 0.0
        while True:
            try:
                due = self.runs.claim_due(BATCH, LEASE_S)
            except Exception:
                log.exception("mlflow: reading the outbox failed; trying again")
                due = []
            for t in due:
                self.send(t)
            if time.monotonic() - purged_at > PURGE_EVERY_S:
                purged_at = time.monotonic()
                try:
                    self.runs.purge(self.settings.mlflow_history_s)
                except Exception:
                    log.exception("mlflow: purging the outbox failed")
            if len(due) < BATCH:
                self._wakeup.wait(POLL_S)
                self._wakeup.clear()

    def send(self, t: Tracked) -> None:
        """One row's run brought up to date, or its next try scheduled."""
        try:
            if t.kind == "job":
                self._sync_job(t)
            else:
                self._sync_sweep(t)
        except Later as e:
            self.runs.wait(t, datetime.now(UTC) + timedelta(seconds=POLL_S), str(e))
        except TrackerError as e:
            if not e.retry or t.attempts + 1 >= MAX_ATTEMPTS:
                log.warning("%s %s: MLflow gave up: %s", t.kind, t.subject, e)
                self.runs.failed(t, str(e))
            else:
                wait = BACKOFF_S[min(t.attempts, len(BACKOFF_S) - 1)]
                log.info("%s %s: MLflow: %s; trying again in %d s", t.kind, t.subject, e, wait)
                self.runs.retry(t, datetime.now(UTC) + timedelta(seconds=wait), str(e))
        except Exception as e:  # the store, or a bug: tried again after a backoff
            log.exception("%s %s: sending to MLflow failed", t.kind, t.subject)
            with contextlib.suppress(Exception):  # else the lease lapses and another try comes
                self.runs.retry(t, datetime.now(UTC) + timedelta(seconds=BACKOFF_S[-1]), repr(e))

    # --- names ---------------------------------------------------------------------------

    def experiment(self, job_spec: dict[str, Any], tenant: str) -> str:
        name = ((job_spec.get("tracking") or {}).get("mlflow") or {}).get("experiment")
        name = name or self.settings.mlflow_experiment
        return f"{tenant}/{name}" if self.tenant_names else name

    def model_name(self, job_spec: dict[str, Any], tenant: str) -> str | None:
        name = ((job_spec.get("tracking") or {}).get("mlflow") or {}).get("register_as")
        if not name:
            return None
        return f"{tenant}.{name}" if self.tenant_names else str(name)

    # --- a job ---------------------------------------------------------------------------

    def _sync_job(self, t: Tracked) -> None:
        job = self.store.get_job(t.subject)
        if job is None:
            self.runs.ended(t, "the job was deleted")
            return
        spec, tenant = job["spec"], job["tenant"]
        run_id = t.run_id
        if run_id is None:
            sweep_id, parent_run = self._parent(job)
            experiment_id = self.client.experiment_id(self.experiment(spec, tenant))
            tags = {
                "regtrain.kind": "job",
                "regtrain.job_id": job["id"],
                "regtrain.tenant": tenant,
                "regtrain.sweep_id": sweep_id,
                "mlflow.parentRunId": parent_run,
            }
            info = self.client.run_tagged(experiment_id, kind="job", job_id=job["id"])
            if info is None:
                info = self.client.create_run(
                    experiment_id, job["name"] or job["id"], job["started_at"], tags
                )
            run_id = str(info["run_id"])
            self.client.log(run_id, params=flat_params(spec))
            if not self.runs.set_run(t, run_id):
                return  # the lease lapsed: another sender has the row now
        rows = self.runs.metrics_after(job["id"], t.sent_epoch)
        if rows:
            points = [
                (key, value, epoch, _ms(at))
                for epoch, row, at in rows
                for key, value in numeric(row).items()
                if key != "epoch"
            ]
            self.client.log(run_id, metrics=points)
            if not self.runs.sent(t, rows[-1][0]):
                return
        if job["status"] not in FINISHED:
            self.runs.synced(t)
            return
        note = None
        result = job.get("result") or {}
        model = self.model_name(spec, tenant)
        if job["status"] == "succeeded" and model:
            note = self._register(job["id"], run_id, model)
        environment = result.get("environment") or {}
        last = job.get("progress_epoch") or 0
        finals = {
            f"test_{k}" if not k.startswith("test_") else k: v
            for k, v in numeric(result.get("metrics")).items()
        }
        finals.update(
            numeric({k: result.get(k) for k in ("best_epoch", "weight_sparsity", "weight_l2_norm")})
        )
        self.client.log(
            run_id,
            metrics=[(k, v, last, _ms(job["finished_at"])) for k, v in finals.items()],
            tags={
                "regtrain.status": job["status"],
                "regtrain.error": (job.get("error") or {}).get("type"),
                # the versions that trained it, as the job's result records them
                "regtrain.version": environment.get("regtrain"),
                "regtrain.torch_version": environment.get("torch"),
                "regtrain.device": environment.get("device"),
                "regtrain.data_sha256": environment.get("data_sha256"),
            },
        )
        self.client.end_run(run_id, RUN_STATUS[job["status"]], job["finished_at"])
        self.runs.ended(t, note)

    def _parent(self, job: dict[str, Any]) -> tuple[str | None, str | None]:
        """(the sweep, its run id) of a sweep's retrain job (known by the idempotency key the
        sweep gave it, within the job's own tenant); (None, None) for any other job."""
        match = _RETRAIN_KEY.match(job.get("idempotency_key") or "")
        if match is None or self.store.get_sweep(match[1], job["tenant"]) is None:
            return None, None
        run_id, coming = self.runs.run_of(match[1])
        if run_id is None and coming:
            raise Later("waiting for its sweep's run")
        return match[1], run_id

    def _register(self, job_id: str, run_id: str, model: str) -> str | None:
        """The best checkpoint (else the final one) into the run's `model` artifacts, and a
        version of `model` from them; None, or why nothing was registered."""
        checkpoint = self.store.checkpoint(job_id, "best") or self.store.checkpoint(job_id, "final")
        if checkpoint is None:
            return "no checkpoint to register"
        weights = checkpoint_key(job_id, checkpoint["path"])
        sidecar = weights.removesuffix(".safetensors") + ".json"
        artifact_uri = self.client.artifact_uri(run_id)
        try:
            for key, name in ((weights, "model.safetensors"), (sidecar, "model.json")):
                size, chunks = self.artifacts.stream(key)
                self.client.upload(artifact_uri, f"model/{name}", size, chunks)
        except ArtifactMissing as e:
            return f"the checkpoint's file is gone ({e}): nothing registered"
        version = self.client.register(model, f"{artifact_uri}/model", run_id)
        log.info("job %s: registered as %s version %s in MLflow", job_id, model, version)
        self.client.log(run_id, tags={"regtrain.registered_as": f"{model}/{version}"})
        return None

    # --- a sweep -------------------------------------------------------------------------

    def _sync_sweep(self, t: Tracked) -> None:
        sweep = self.store.get_sweep(t.subject)
        if sweep is None:
            self.runs.ended(t, "the sweep was deleted")
            return
        spec, tenant = sweep["spec"], sweep["tenant"]
        base = spec.get("base") or {}
        experiment_id = self.client.experiment_id(self.experiment(base, tenant))
        run_id = t.run_id
        if run_id is None:
            info = self.client.run_tagged(experiment_id, kind="sweep", sweep_id=sweep["id"])
            if info is None:
                tags = {
                    "regtrain.kind": "sweep",
                    "regtrain.sweep_id": sweep["id"],
                    "regtrain.tenant": tenant,
                }
                info = self.client.create_run(
                    experiment_id, sweep["name"] or sweep["id"], sweep["started_at"], tags
                )
            run_id = str(info["run_id"])
            # The base's fields, less those the search varies (each trial's run has its value;
            # the search itself is `sweep.grid`, `sweep.random`, ...), and the sweep's own.
            searched = {p for k in ("grid", "random", "path", "space") for p in spec.get(k) or {}}
            params = {k: v for k, v in flat_params(base).items() if k not in searched}
            params.update(
                {
                    f"sweep.{k}": _value(v)
                    for k, v in spec.items()
                    if k not in ("base", "name") and v is not None
                }
            )
            self.client.log(run_id, params=params)
            if not self.runs.set_run(t, run_id):
                return
        known = self.runs.trial_runs(sweep["id"])
        todo = [
            trial
            for trial in self.store.trials([sweep["id"]])[sweep["id"]]
            if trial["status"] in TRIAL_FINISHED and not known.get(trial["trial_index"], (None, False))[1]
        ]
        # A few at a time, well within the lease: the rest at once in the next send.
        for trial in todo[:TRIALS_PER_SEND]:
            run = known.get(trial["trial_index"], (None, False))[0]
            self._sync_trial(sweep, base, experiment_id, run_id, trial, run)
        if len(todo) > TRIALS_PER_SEND:
            self.runs.synced(t, again_in_s=0)
            return
        if sweep["status"] not in FINISHED:
            self.runs.synced(t, again_in_s=SWEEP_POLL_S)
            return
        self.client.log(
            run_id,
            tags={
                "regtrain.status": sweep["status"],
                "regtrain.best_trial": sweep.get("best_index"),
                "regtrain.best_job_id": sweep.get("best_job_id"),
                "regtrain.error": (sweep.get("error") or {}).get("type"),
            },
        )
        self.client.end_run(run_id, RUN_STATUS[sweep["status"]], sweep["finished_at"])
        self.runs.ended(t)

    def _sync_trial(
        self,
        sweep: dict[str, Any],
        base: dict[str, Any],
        experiment_id: str,
        parent_run: str,
        trial: dict[str, Any],
        run_id: str | None,
    ) -> None:
        """A finished trial as a run nested in its sweep's: its spec's params (the base with
        the trial's values), its metrics, the objective after every step, its end."""
        index = trial["trial_index"]
        if run_id is None:
            tags = {
                "mlflow.parentRunId": parent_run,
                "regtrain.kind": "trial",
                "regtrain.sweep_id": sweep["id"],
                "regtrain.trial_index": index,
                "regtrain.tenant": sweep["tenant"],
            }
            info = self.client.run_tagged(
                experiment_id, kind="trial", sweep_id=sweep["id"], trial_index=str(index)
            ) or self.client.create_run(experiment_id, f"trial-{index}", trial.get("started_at"), tags)
            run_id = str(info["run_id"])
            self.runs.add_trial(sweep["id"], index, run_id)
        params = flat_params(base)
        params.update({k: _value(v) for k, v in (trial.get("params") or {}).items()})
        end = _ms(trial.get("finished_at"))
        curve = [
            (float(s), float(v)) for s, v in trial.get("curve") or [] if v is not None and math.isfinite(v)
        ]
        last = int(curve[-1][0]) if curve else 0
        metrics = [("objective", v, int(s), end) for s, v in curve]
        finals = numeric(trial.get("metrics"))
        finals.update(numeric({"score": trial.get("score"), "best_epoch": trial.get("best_epoch")}))
        metrics += [(k, v, last, end) for k, v in finals.items()]
        tags = {"regtrain.trial_status": trial["status"], "regtrain.reason": trial.get("reason")}
        self.client.log(run_id, params=params, metrics=metrics, tags=tags)
        self.client.end_run(run_id, RUN_STATUS.get(trial["status"], "FINISHED"), trial.get("finished_at"))
        self.runs.trial_logged(sweep["id"], index)


def track_in_mlflow(store: Repository, settings: Settings) -> MlflowSender:
    """Where REGTRAIN_MLFLOW_TRACKING_URI is set: the store writes the outbox's rows, and this
    process's sender (started now) sends them."""
    store.mlflow_tracking = True
    sender = MlflowSender(settings, store)
    store.listeners.append(sender.on_change)
    sender.start()
    return sender
