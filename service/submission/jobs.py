"""Jobs as the API sees them: check a spec against its data, submit it, render the document."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from service.contract.addresses import resolve_target
from service.contract.architecture import (
    Caps,
    DataShape,
    LayerPlan,
    check_caps,
    estimate_memory_bytes,
    known_shape,
    parameter_count,
)
from service.contract.data_sources import data_sources
from service.contract.dataset_kinds import kind_of
from service.contract.errors import AtCapacity, SpecError, Unavailable
from service.contract.spec import JobSpec
from service.data import columns as feature_columns
from service.data import uri as dataset_uri
from service.data.buckets import BucketUnreachable
from service.data.columns import TextBounds
from service.data.parsed import DataError
from service.queue.broker import Broker, queue_for_device
from service.settings import Settings
from service.store import Repository
from service.store.datasets import DatasetGone
from service.store.leased import UNSENT
from service.store.repository import Row
from service.submission import idempotency
from service.submission.remote import RemoteSlots

# What a 429 tells a client to wait: long enough for small jobs to finish, short enough that a
# polling client does not sit idle behind a queue that has drained.
RETRY_AFTER_S = 10


@dataclass(frozen=True)
class CheckedSpec:
    spec: JobSpec  # with time_limit_s capped at the server's limit
    shape: DataShape | None  # None: a dataset by URI, whose shape only the worker learns
    parameters: int | None
    memory_bytes_per_batch: int | None
    queue: str
    # The egress rule it was admitted under, recorded with the job (jobs.egress_private).
    egress_private: bool


def check_spec(
    spec: JobSpec, store: Repository, tenant: str, settings: Settings, *, egress_private: bool | None = None
) -> CheckedSpec:
    """Refuse (422, naming the field) a spec that cannot run on its data or is too large.
    `egress_private`: the egress rule to admit it under; default: this server's
    (settings.admits_private_targets), which the API decides. A job a worker creates passes the
    rule of the work it comes from (a sweep's retrain)."""
    spec = _capped(spec, settings)
    allow_private = settings.admits_private_targets if egress_private is None else egress_private
    check_notify(spec, allow_private, ("body",))
    if egress_private is None:  # the API admits it; a sweep's retrain came in with its sweep
        check_tracking(spec, settings, ("body",))
    uri = kind_of(spec.dataset).uri(spec.dataset)
    if uri is not None:
        refusal = data_sources(settings).refusal(tenant, uri)
        if refusal is not None:
            raise SpecError(("body", "dataset", "uri"), refusal)
        # Whether the object is there and under the limit is asked of its origin by check_uri,
        # awaited by the route on the event loop once this has passed.
        queue = queue_for_device(settings, spec.training.device)
        return CheckedSpec(
            spec=spec,
            shape=None,
            parameters=None,
            memory_bytes_per_batch=None,
            queue=queue,
            egress_private=allow_private,
        )
    shape = data_shape(spec, store, tenant, text=TextBounds.of(settings))
    try:
        layers = check_shape(spec, shape, settings)
    except SpecError as e:
        raise SpecError(("body", *e.loc), e.message) from None
    return CheckedSpec(
        spec=spec,
        shape=shape,
        parameters=parameter_count(layers),
        memory_bytes_per_batch=estimate_memory_bytes(layers, spec.training.batch_size),
        queue=queue_for_device(settings, spec.training.device),
        egress_private=allow_private,
    )


def check_tracking(spec: JobSpec, settings: Settings, loc: tuple[str, ...]) -> None:
    """A 422 at tracking.mlflow on a server with no tracker: a job names an experiment, never
    the tracker (REGTRAIN_MLFLOW_TRACKING_URI, the operator's), and a name with nowhere to go
    would be dropped in silence."""
    if spec.tracking is not None and not settings.mlflow_tracking_uri:
        raise SpecError(
            (*loc, "tracking", "mlflow"),
            "this server tracks no runs in MLflow (its operator has not set REGTRAIN_MLFLOW_TRACKING_URI)",
        )


def check_notify(spec: JobSpec, allow_private: bool, loc: tuple[str, ...]) -> None:
    """A 422 at notify.url for a receiver the egress rule forbids, where that is known without a
    DNS lookup: an address literal (in any form the resolver reads: 127.1, 2130706433, [::1])
    or `localhost`. A host name is judged when each delivery is sent (what it resolves to may
    change meanwhile), by the same rule, which the delivery carries."""
    if spec.notify is None or allow_private:
        return
    host = urlsplit(spec.notify.url).hostname or ""
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        if host.rstrip(".").lower() != "localhost":
            return
    if resolve_target(spec.notify.url, allow_private=False) is None:
        raise SpecError(
            (*loc, "notify", "url"),
            "a loopback, private or link-local receiver is not allowed on this server "
            "(REGTRAIN_EGRESS_PRIVATE_TARGETS)",
        )


async def check_uri(checked: CheckedSpec, settings: Settings, remote: RemoteSlots, tenant: str) -> None:
    """For a dataset by URI, what can be known without downloading it: the object is there and
    under the limit (its shape, and so the model's size, is checked by the worker, which fails
    the job naming the field). Awaited on the API's event loop, after check_spec and before the
    insert: the HEAD holds no request thread, ends at REGTRAIN_REMOTE_HEAD_DEADLINE_S, and takes
    one of the tenant's remote slots (none free: 429)."""
    ds = kind_of(checked.spec.dataset).remote(checked.spec.dataset)
    if ds is None:
        return
    with remote.slot(tenant):
        try:
            await dataset_uri.head_async(
                ds,
                allow_private=checked.egress_private,
                max_bytes=settings.max_dataset_bytes,
                deadline_s=settings.remote_head_deadline_s,
            )
        except DataError as e:
            raise SpecError(("body", "dataset", "uri"), str(e)) from None
        except BucketUnreachable:
            raise Unavailable("the bucket of dataset.uri cannot be reached; try again") from None


def check_shape(spec: JobSpec, shape: DataShape, settings: Settings) -> list[LayerPlan]:
    """The model's plan once the data's shape is known (at submit; for a dataset by URI, in the
    worker that read it): SpecError naming the field when the model, the worker memory it needs
    or the work it asks for (epochs × samples) is over the server's limits."""
    return check_caps(spec, shape, caps(settings))


def caps(settings: Settings) -> Caps:
    """This server's caps on one training (REGTRAIN_MAX_PARAMETERS, _MAX_WORKER_MEMORY_BYTES,
    _MAX_EPOCH_SAMPLES): a job's, each trial of a sweep's."""
    return Caps(settings.max_parameters, settings.max_worker_memory_bytes, settings.max_epoch_samples)


def _capped(spec: JobSpec, settings: Settings) -> JobSpec:
    limit = spec.training.time_limit_s
    if limit is not None and limit > settings.max_time_limit_s:
        training = spec.training.model_copy(update={"time_limit_s": settings.max_time_limit_s})
        spec = spec.model_copy(update={"training": training})
    return spec


def data_shape(
    spec: JobSpec,
    store: Repository,
    tenant: str,
    loc: tuple[str, ...] = ("body",),
    *,
    text: TextBounds | None = None,
) -> DataShape:
    """The shape of the spec's data: known to its kind (built in, synthetic), or one of the
    tenant's uploads; a 422 at `loc` (where the spec sits in the request) when the tenant has no
    such upload, or for an object by URI (its shape is known only once a worker has read it).
    `text`: the bounds a text dataset is planned at (default: this process's settings)."""
    kind = kind_of(spec.dataset)
    shape = known_shape(spec)
    if shape is not None:
        return shape
    dataset_id = kind.upload_id(spec.dataset)
    if dataset_id is None:
        raise SpecError(
            (*loc, "dataset", "uri"),
            "a sweep trains on a registered dataset: POST /v1/datasets with this uri, then give its id",
        )
    row = store.get_dataset(dataset_id, tenant)
    if row is None:
        raise SpecError((*loc, "dataset", "id"), f"no dataset with id {dataset_id!r}")
    return dataset_shape(row, spec, loc, text=text)


def dataset_shape(
    row: Row,
    spec: JobSpec | None = None,
    loc: tuple[str, ...] = ("body",),
    *,
    text: TextBounds | None = None,
) -> DataShape:
    """An upload's shape as the model sees it: a CSV's or Parquet file's width is that of its
    columns once encoded as the spec declares (one-hot categories, missing indicators), so
    the parameter count and memory caps hold for what the engine builds."""
    sample = row["image_shape"] or [row["n_features"]]
    kept = row.get("columns")
    shape = DataShape.of(row["task"], sample, int(row["n_classes"] or 0), int(row["n_samples"]))
    if spec is None:
        return shape
    return columns_shape(shape, kept["features"] if kept else None, spec, (*loc, "dataset", "columns"), text)


def columns_shape(
    shape: DataShape,
    summary: list[dict[str, Any]] | None,
    spec: JobSpec,
    loc: tuple[str, ...],
    text: TextBounds | None = None,
) -> DataShape:
    """The stored shape of a dataset as the spec's model sees it: a CSV's or Parquet file's
    columns encoded as `dataset.columns` declares (see encoded_width), or, for a text model on
    a file with a text column, token ids at the bounds the engine's tokenizer fit keeps within
    (`text`, default this process's settings: max_tokens ids from max_vocabulary words and 2
    specials; the fitted shape is never larger, so the planner's parameter and memory caps hold
    for what the engine builds, a worker fitting at the same REGTRAIN_TEXT_* settings)."""
    text_model = feature_columns.takes_text(spec.model)
    width = encoded_width(summary, spec.dataset, loc, text_model=text_model)
    if width == TEXT_WIDTH:
        bounds = text or TextBounds.of()
        t, v = bounds.max_tokens, bounds.max_vocabulary + 2
        return replace(shape, n_features=t, image_shape=None, sequence=(t, 1), vocab_size=v)
    return shape if width is None else replace(shape, n_features=width, image_shape=None)


# encoded_width's answer for a text dataset (its columns are read as token ids, not features)
TEXT_WIDTH = -1


def encoded_width(
    summary: list[dict[str, Any]] | None, dataset: Any, loc: tuple[str, ...], *, text_model: bool = False
) -> int | None:
    """The features a CSV's or Parquet file's columns encode to under `dataset.columns`; None
    for data whose columns are its features; TEXT_WIDTH where a text model reads a text column.
    A 422 at `loc` names every column that cannot be used as declared, or the widest ones when
    the whole is over the limit."""
    declared = getattr(dataset, "columns", "auto")
    if summary is None:
        if declared != "auto":
            raise SpecError(loc, "only a CSV or Parquet dataset has columns to declare")
        return None
    limit = max(feature_columns.MAX_ENCODED_FEATURES, 2 * len(summary))
    try:
        planned = feature_columns.plan(
            summary, None if declared == "auto" else declared, max_features=limit, text_model=text_model
        )
    except feature_columns.ColumnsError as e:
        raise SpecError(loc, str(e)) from None
    if feature_columns.text_column(planned) is not None:
        return TEXT_WIDTH
    return feature_columns.n_features(planned)


def submit(
    checked: CheckedSpec,
    store: Repository,
    broker: Broker,
    tenant: str,
    idempotency_key: str | None,
    *,
    max_active: int | None = None,
) -> tuple[Row, bool]:
    """Store the job, then ring the broker. Returns (job row, created); a retried POST with the
    same Idempotency-Key and the same spec returns the first job, with another spec a 409.
    A tenant with `max_active` jobs queued or running gets a 429 (a retried POST of a job it
    already has does not: that job is counted already)."""
    spec = checked.spec.model_dump(mode="json")
    find = functools.partial(store.job_by_idempotency_key, tenant)
    once = idempotency.Once(find, idempotency_key, spec, "job spec")
    existing, active = store.job_submit_state(tenant, idempotency_key)
    if existing is not None:
        once.same_request(existing)
        # A retry after a 503 (the broker was down): the job never reached the queue; now it may.
        if store.requeue_unsent(existing["id"]):
            send(broker.enqueue, store.fail_queued, existing["id"], checked.queue)
            return store.get_job(existing["id"]) or existing, True
        return existing, False
    if max_active is not None:
        refuse_over_capacity(active, max_active)
    dataset_id = uploaded_id(checked.spec)
    with dataset_held(("body",), dataset_id):
        job, created = once.create(
            lambda: store.create_job(
                tenant=tenant,
                spec=spec,
                queue=checked.queue,
                idempotency_key=idempotency_key,
                request_sha256=once.request_sha256,
                notify_secret=checked.spec.notify.secret if checked.spec.notify else None,
                dataset_id=dataset_id,
                egress_private=checked.egress_private,
            )
        )
    if not created:
        return job, False
    send(broker.enqueue, store.fail_queued, job["id"], checked.queue)
    return job, True


def uploaded_id(spec: JobSpec) -> str | None:
    """The id of the tenant's upload the spec trains on, if it trains on one."""
    return kind_of(spec.dataset).upload_id(spec.dataset)


@contextmanager
def dataset_held(loc: tuple[str, ...], dataset_id: str | None) -> Iterator[None]:
    """Around the insert that holds the dataset (store.create_job, create_sweep): a DELETE that
    won the race answers the submit as a dataset that was never there, a 422 at `loc` (where the
    spec sits in the request)."""
    try:
        yield
    except DatasetGone:
        raise SpecError((*loc, "dataset", "id"), f"no dataset with id {dataset_id!r}") from None


def check_capacity(store: Repository, tenant: str, max_active: int) -> None:
    """429 for a tenant with max_active jobs and sweeps queued or running (see
    refuse_over_capacity)."""
    refuse_over_capacity(store.active_work(tenant), max_active)


def refuse_over_capacity(active: int, max_active: int) -> None:
    """429 when `active` (the tenant's jobs and sweeps queued or running) has reached
    max_active (what REGTRAIN_MAX_ACTIVE_JOBS counts: a sweep counts once, its trainings are
    bounded by REGTRAIN_MAX_SWEEP_TRAININGS). Counted, then inserted: concurrent submits may
    pass the cap by a few; it bounds a tenant's share of the queue, not an exact quota."""
    if active >= max_active:
        raise AtCapacity(
            f"this tenant has {max_active} jobs and sweeps queued or running, the most allowed; "
            "retry once some have finished",
            retry_after_s=RETRY_AFTER_S,
        )


def send(
    enqueue: Callable[[str, str], None],
    fail: Callable[[str, dict[str, Any]], None],
    row_id: str,
    queue: str,
) -> None:
    """Ring the broker for a stored row; when it cannot be reached, fail the row (so it never
    runs behind the back of a client told 503; a retry under its Idempotency-Key revives it)."""
    try:
        enqueue(row_id, queue)
    except Exception as e:
        fail(row_id, {"type": UNSENT, "message": str(e)[:500]})
        raise Unavailable(
            f"the broker is unreachable; {row_id} was not queued (retry with the same Idempotency-Key)"
        ) from e
