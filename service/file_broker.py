"""The embedded broker: kombu's filesystem transport, with messages that appear whole.

kombu writes a message file in place (create, then write), and a worker polling the folder can
move and read it between the two: an empty payload, a JSONDecodeError, and the worker process
dies ("Unrecoverable error"). Here a message is written to a staging folder beside the queue
and renamed into it, which is atomic on one filesystem, so a reader sees a whole file or none.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

SCHEME = "regtrain-files"


class Channel(filesystem.Channel):
    @cached_property
    def staging_folder(self) -> Path:
        folder = Path(self.transport_options.get("staging_folder") or f"{self.data_folder_out}.staging")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The same name kombu gives a message (its time orders the queue), written elsewhere first.
        name = f"{round(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staged = self.staging_folder / name
        try:
            staged.write_bytes(dumps(payload).encode())
            os.replace(staged, Path(self.data_folder_out) / name)
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot add message {name!r} to the queue folder") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
