"""The embedded broker: kombu's filesystem transport, with messages that appear whole and are
noticed at once.

kombu writes a message file in place (create, then write), and a worker polling the folder can
move and read it between the two: an empty payload, a JSONDecodeError, and the worker process
dies ("Unrecoverable error"). Here a message is written to a staging folder beside the queue
and renamed into it, which is atomic on one filesystem, so a reader sees a whole file or none.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

try:  # Linux only; elsewhere the transport polls as kombu's does
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover
    INotify = None

SCHEME = "regtrain-files"


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The queue's folders appear when a connection first opens a channel (a send, a
        # worker's consumer, a depth check), so importing the Celery app touches no disk.
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            if folder := self.transport_options.get(key):
                Path(folder).mkdir(parents=True, exist_ok=True)

    @cached_property
    def staging_folder(self) -> Path:
        folder = Path(self.transport_options.get("staging_folder") or f"{self.data_folder_out}.staging")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # kombu's own filesystem.Channel._put has this signature; its AbstractChannel names the
    # argument `message`, so the override mypy sees is kombu's inconsistency, not ours.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The same name kombu gives a message (its time orders the queue), written elsewhere first.
        name = f"{round(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staged = self.staging_folder / name
        try:
            staged.write_bytes(dumps(payload).encode())
            os.replace(staged, Path(self.data_folder_out) / name)
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot add message {name!r} to the queue folder") from exc


class Transport(filesystem.Transport):
    """kombu's loop, except that where it sleeps polling_interval between looks at an empty
    queue folder, this one waits on an inotify watch of the folder (Linux), so a message is
    taken within a millisecond or two of its rename, and an idle worker looks only every
    IDLE_LOOK_S (a missed event costs that much latency, never a message)."""

    Channel = Channel
    IDLE_LOOK_S = 1.0

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        watch = self._watch()
        if watch is None:
            super().drain_events(connection, timeout=timeout)
            return
        started = monotonic()
        cycle = self.cycle
        assert cycle is not None, "kombu sets the cycle when the connection opens"
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                left = self.IDLE_LOOK_S if timeout is None else timeout - (monotonic() - started)
                if left <= 0:
                    raise TimeoutError() from None
                if watch.read(timeout=round(1000 * min(left, self.IDLE_LOOK_S))):
                    continue  # something arrived (or moved): look at once

    def close_connection(self, connection: Any) -> None:
        watch = self.__dict__.pop("watch", None)
        if watch is not None:
            watch.close()  # a reconnecting consumer would otherwise leak one inotify per try
        super().close_connection(connection)

    def _watch(self) -> INotify | None:
        if "watch" not in self.__dict__:
            self.__dict__["watch"] = None
            folder = self.client.transport_options.get("data_folder_in") if self.client else None
            if INotify is not None and folder:
                try:
                    watch = INotify()
                    watch.add_watch(folder, flags.MOVED_TO | flags.CLOSE_WRITE)
                    self.__dict__["watch"] = watch
                except OSError:  # no inotify here (a limit, a file system without it): poll
                    pass
        return self.__dict__["watch"]


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
