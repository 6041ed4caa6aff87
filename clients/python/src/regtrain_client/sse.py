"""A reader of text/event-stream (Server-Sent Events), as the job and sweep streams send them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel


class Event(BaseModel):
    """One Server-Sent Event: `event` (status, epoch, checkpoint, trial or done), its JSON
    `data` (text where it is not JSON) and its `id`, for Last-Event-ID on reconnect."""

    event: str
    data: Any
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
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
