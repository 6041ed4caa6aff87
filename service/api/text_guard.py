"""Refuse text no store can keep, before any route sees it.

JSON may spell a lone UTF-16 surrogate (`"\\ud800"`) or a NUL (`"\\u0000"`): Python decodes both
into a `str`, but PostgreSQL refuses NUL in text and jsonb, UTF-8 cannot encode a lone surrogate
(so the answer itself would fail to render), and SQLite would store them. A URL may carry a NUL
too (`/v1/jobs/%00`). Each answers 422 naming where it was, on every backend alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A NUL, or a UTF-16 surrogate (never valid on its own in Unicode text).
BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


MAX_DEPTH = 32  # a JobSpec nests 5 deep; deeper JSON is refused before anything recurses into it


def find_bad_text(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """(where, what) of the first string (key or value) holding a NUL or a lone surrogate, or of
    the first value nested deeper than MAX_DEPTH."""
    if len(loc) > MAX_DEPTH:
        return loc[:MAX_DEPTH], f"nesting deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        m = BAD_CHAR.search(value)
        if m is None:
            return None
        return loc, "a NUL character" if m.group() == "\x00" else "a lone UTF-16 surrogate"
    if isinstance(value, dict):
        for k, v in value.items():
            bad = find_bad_text(k, loc) or find_bad_text(v, (*loc, k))
            if bad:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad = find_bad_text(v, (*loc, i))
            if bad:
                return bad
    return None


def printable(value: Any) -> Any:
    """`value` with every bad character of a string replaced by U+FFFD, so it can be rendered."""
    if isinstance(value, str):
        return BAD_CHAR.sub("\ufffd", value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def _refusal(loc: tuple[str | int, ...], what: str) -> JSONResponse:
    message = what if what.startswith("nesting") else f"text may not contain {what}"
    shown = [printable(part) for part in loc]
    return JSONResponse({"detail": [{"loc": shown, "msg": message, "type": "value_error"}]}, status_code=422)


class TextGuard:
    """ASGI middleware: 422 for a NUL in the path or query, and for a JSON body with a NUL or a
    lone surrogate in any key or string. Bodies are already bounded by BodyLimit (outside it),
    so reading one whole costs at most its route's limit (max_request_bytes; /predict's own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _refusal(("path",), "a NUL character")(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b"").lower():
            await _refusal(("query",), "a NUL character")(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
        if not (content_type == b"application/json" or content_type.endswith(b"+json")):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            try:
                message = await receive()
            except HTTPException as e:  # BodyLimit's 413 for a chunked body past the limit
                await JSONResponse({"detail": e.detail}, status_code=e.status_code)(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            bad = find_bad_text(json.loads(body))
        except RecursionError:  # deeper than the parser itself goes
            bad = (), f"nesting deeper than {MAX_DEPTH} levels"
        except ValueError:
            bad = None  # not JSON: the route's own parser answers its 422
        if bad is not None:
            await _refusal(("body", *bad[0]), bad[1])(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
