"""What a job's attempt logs, kept with the job in the store (GET /v1/jobs/{id}/logs).

An AttemptLog is a logging.Handler on the root logger for as long as the worker runs one job:
it takes the records of the worker's and the engine's loggers (and of the libraries they call)
emitted on the job's own thread and its lease's heartbeat thread, and the Python warnings the
job's thread raises. The records of every other thread of the process (the reaper, the webhook
sender: they act for other tenants' jobs too) never enter a job's log. A worker trains one job
at a time (the solo pool: service/cli/main.py), so the job's thread is the one that entered.

Lines are buffered and written in batches, every FLUSH_S seconds by a thread of its own and
before the job's final state is written (`flush`), so a job read as finished has its whole log;
never one round trip per line. A write that fails loses those lines and nothing else: a job's
log must never fail, slow or stop the job.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from service.store import Repository
from service.store.job_logs import HEAD_SHARE, LogLine, line_size

log = logging.getLogger("regtrain.worker")

FLUSH_S = 1.0
# Longest line kept (a share of the job's bound below that): a traceback of a deep recursion, a
# tensor printed whole. Its start and its end stay, the end being where an error says what it is.
MAX_LINE_BYTES = 16 * 1024
# Captured faster than written (a tight loop logging): past this many bytes waiting, further
# lines are counted and dropped until the next write, which says how many.
MAX_PENDING_FACTOR = 2


class AttemptLog(logging.Handler):
    def __init__(self, store: Repository, job_id: str, *, max_bytes: int, flush_s: float = FLUSH_S) -> None:
        super().__init__(logging.INFO)
        self.store = store
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.max_line = max(256, min(MAX_LINE_BYTES, max_bytes // HEAD_SHARE))
        self.flush_s = flush_s
        self.attempt: int | None = None  # set by begin(): nothing is kept before the claim
        self._thread = threading.get_ident()
        self._threads: set[str] = set()  # names of helper threads whose records belong here
        self._pending: list[LogLine] = []
        self._pending_bytes = 0
        self._lost = 0
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writing = threading.local()
        self._failed = False
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, name=f"joblog-{job_id[:8]}", daemon=True)
        self._warnings = warnings.catch_warnings()
        self._showwarning: Any = None

    # --- the attempt ---------------------------------------------------------------------

    def __enter__(self) -> AttemptLog:
        # catch_warnings: the filters as they were (so an operator's -W still rules), restored
        # on exit; entering also resets the "once per place" memory of the `default` action,
        # so each attempt's log shows a warning that an earlier job of this process raised.
        self._warnings.__enter__()
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._show_warning
        logging.getLogger().addHandler(self)
        self._flusher.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        logging.getLogger().removeHandler(self)
        self._warnings.__exit__(exc_type, exc, tb)
        self._closed.set()
        self._wake.set()
        self._flusher.join(timeout=30)
        self.flush()

    def begin(self, attempt: int, note: str) -> None:
        """The job is claimed: keep what follows as attempt `attempt`'s lines, `note` first."""
        self.attempt = attempt
        self._add(datetime.now(UTC), "INFO", note)

    def follow(self, thread_name: str) -> None:
        """Keep the records of the thread named so (the lease's heartbeat) as well."""
        self._threads.add(thread_name)

    # --- logging and warnings ------------------------------------------------------------

    def _ours(self, thread: int | None, thread_name: str | None) -> bool:
        if self.attempt is None or getattr(self._writing, "on", False):
            return False  # before the claim, or the store's own records while writing lines
        return thread == self._thread or thread_name in self._threads

    def emit(self, record: logging.LogRecord) -> None:
        # The warnings module's records (logging.captureWarnings) come in by _show_warning.
        if record.name == "py.warnings" or not self._ours(record.thread, record.threadName):
            return
        try:
            message = record.getMessage()
            exc_info = record.exc_info
            if exc_info is None and record.levelno >= logging.WARNING and record.thread == self._thread:
                # A failure logged while an exception is handled (the task's "failed: bad_data")
                # comes with its traceback here; the worker's own log keeps its one line.
                handled = sys.exc_info()
                exc_info = handled if handled[0] is not None else None
            if exc_info:
                message += "\n" + _FORMATTER.formatException(exc_info)
            if record.stack_info:
                message += "\n" + record.stack_info
        except Exception:
            self.handleError(record)
            return
        self._add(datetime.fromtimestamp(record.created, UTC), record.levelname, message)

    def _show_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if self._ours(threading.get_ident(), threading.current_thread().name):
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
            self._add(datetime.now(UTC), "WARNING", text)
        self._showwarning(message, category, filename, lineno, file, line)

    def _add(self, at: datetime, level: str, message: str) -> None:
        line = LogLine(at, level, self._cut(message))
        with self._buffer_lock:
            if self._pending_bytes > MAX_PENDING_FACTOR * self.max_bytes:
                self._lost += 1
                return
            self._pending.append(line)
            self._pending_bytes += line_size(line.message)
            if self._pending_bytes > self.max_bytes:
                self._wake.set()  # the flusher writes now rather than at its next tick

    def _cut(self, message: str) -> str:
        """The message, or its start and end within max_line bytes."""
        raw = message.encode("utf-8", "replace")
        if len(raw) + 64 <= self.max_line:  # 64: room for the note below
            return message
        head = (self.max_line - 64) // 4
        tail = self.max_line - 64 - head
        start = raw[:head].decode("utf-8", "ignore")
        end = raw[-tail:].decode("utf-8", "ignore")
        cut = len(message) - len(start) - len(end)
        return f"{start}\n[... {cut} characters cut ...]\n{end}"

    # --- writing -------------------------------------------------------------------------

    def _flush_every(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is waiting, in one transaction; never raises."""
        with self._write_lock:
            with self._buffer_lock:
                lines, lost = self._pending, self._lost
                self._pending, self._pending_bytes, self._lost = [], 0, 0
            if lost:
                note = f"[{lost} lines dropped: logged faster than they could be kept]"
                lines.append(LogLine(datetime.now(UTC), "WARNING", note))
            if not lines or self.attempt is None:
                return
            self._writing.on = True
            try:
                self.store.append_logs(self.job_id, self.attempt, lines, max_bytes=self.max_bytes)
            except Exception as e:
                if not self._failed:  # once per attempt: a store that is down says so already
                    self._failed = True
                    log.warning("job %s: %d log lines could not be kept: %s", self.job_id, len(lines), e)
            finally:
                self._writing.on = False


_FORMATTER = logging.Formatter()
