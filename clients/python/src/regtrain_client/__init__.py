"""The Python client of the regtrain API: httpx and pydantic only (no torch).

    from regtrain_client import Client

    client = Client("http://127.0.0.1:8000")          # or REGTRAIN_URL / REGTRAIN_API_KEY
    job = client.submit({"dataset": {"name": "digits"}, "model": {"type": "mlp"}})
    job = job.wait(progress=True)                     # a bar (tqdm) or a line per epoch
    rows = job.metrics()                              # [EpochMetrics(epoch=1, ...), ...]
    job.download("best", "digits.safetensors")

Results are typed (pydantic models that keep any field a newer server adds). An error answer
raises an ApiError subclass carrying the server's `detail`. Connection errors are retried with
exponential backoff; a submit sends an Idempotency-Key, so a retried submit never makes a
second job.
"""

from regtrain_client.client import DEFAULT_URL, Client, load_spec
from regtrain_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    InvalidSpec,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    format_detail,
)
from regtrain_client.frames import EpochRows, Rows
from regtrain_client.models import (
    FINISHED,
    BatchPrediction,
    Checkpoint,
    Dataset,
    Document,
    EpochMetrics,
    HistoryEntry,
    Job,
    JobError,
    JobResult,
    LogLine,
    LogPage,
    Predictions,
    Progress,
    Sweep,
    SweepBest,
    SweepStop,
    Trial,
    Worker,
)
from regtrain_client.progress import epoch_line, sweep_progress_line, trial_event_line
from regtrain_client.sse import Event, parse_sse

__all__ = [
    "DEFAULT_URL",
    "FINISHED",
    "ApiError",
    "BadRequest",
    "BatchPrediction",
    "Checkpoint",
    "Client",
    "Conflict",
    "Dataset",
    "Document",
    "EpochMetrics",
    "EpochRows",
    "Event",
    "HistoryEntry",
    "InvalidSpec",
    "Job",
    "JobError",
    "JobFailed",
    "JobResult",
    "LogLine",
    "LogPage",
    "NotFound",
    "PayloadTooLarge",
    "Predictions",
    "Progress",
    "Rows",
    "Sweep",
    "SweepBest",
    "SweepStop",
    "TooManyRequests",
    "Trial",
    "Unauthorized",
    "Unavailable",
    "Worker",
    "epoch_line",
    "format_detail",
    "load_spec",
    "parse_sse",
    "sweep_progress_line",
    "trial_event_line",
]
