"""A 422 in the user's terms: each error's `loc` names the fields as the request wrote them
(pydantic adds the tag of the union member it tried, e.g. body.model.mlp.hiden), an unknown field
gets "did you mean" when a known one is close, and nothing in it fails to render (NaN, infinity,
a lone surrogate)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from service.api.text_guard import printable

_MISSING = object()


def _child(node: Any, part: Any) -> Any:
    """node[part] where the request has it, else _MISSING."""
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _MISSING


def user_loc(loc: Sequence[Any], body: Any) -> list[Any]:
    """`loc` without the parts that are not in the request: walking the body along the loc, a
    part that is neither a key of the object at hand nor an index of the list at hand is a union
    tag when more parts follow it (the last part may name a missing or unknown field); so is a
    part that names a scalar of the request when the next part is a sibling of it (a tag spelt
    like one of its member's fields: `body.dataset.uri.format` is `body.dataset.format`)."""
    if not loc or loc[0] != "body":
        return list(loc)
    out: list[Any] = ["body"]
    node: Any = body
    parts = list(loc[1:])
    for i, part in enumerate(parts):
        child = _child(node, part)
        sibling_next = i + 1 < len(parts) and _child(node, parts[i + 1]) is not _MISSING
        if child is not _MISSING and not isinstance(child, (dict, list)) and sibling_next:
            continue  # a scalar, and the next part is beside it: the tag of the member with both
        if child is not _MISSING:
            node = child
        elif i < len(parts) - 1 or not isinstance(node, dict):
            continue  # a union member's tag (or a tag after a scalar)
        out.append(part)
    return out


@cache
def _field_sets() -> list[frozenset[str]]:
    """The field names of every request model (the JobSpec, the SweepSpec and what they hold)."""
    from service.contract.spec import Strict

    seen: list[frozenset[str]] = []
    todo: list[type[BaseModel]] = [Strict]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.model_fields:
            seen.append(frozenset(cls.model_fields))
    return seen


def suggestion(unknown: str, siblings: Iterable[str]) -> str | None:
    """The known field closest to `unknown`, among the models that have the request's other
    fields at that place (every model's fields where none fits)."""
    others = {s for s in siblings if s != unknown}
    sets = _field_sets()
    fitting = [s for s in sets if others and others <= s] or sets
    names = sorted(set().union(*fitting))
    close = difflib.get_close_matches(unknown, names, n=1, cutoff=0.7)
    return close[0] if close else None


def _parent(body: Any, loc: Sequence[Any]) -> Any:
    node = body
    for part in loc[1:-1]:
        node = _child(node, part)
        if node is _MISSING:
            return None
    return node


def _json_safe(value: Any) -> Any:
    """Non-finite floats (not JSON) become their string spelling; bad text becomes U+FFFD."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return printable(value)


def render(errors: Sequence[Any], body: Any) -> list[dict[str, Any]]:
    """FastAPI's errors as the answer's `detail`, with user locs, suggestions and no duplicates
    (a value that fits no member of a union is one error per member)."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for err in jsonable_encoder(errors):
        loc = user_loc(err.get("loc", []), body)
        if err.get("type") == "extra_forbidden" and loc:
            parent = _parent(body, loc)
            near = suggestion(str(loc[-1]), parent if isinstance(parent, dict) else ())
            if near is not None:
                err["msg"] = f"{err['msg']}; did you mean {near!r}?"
        key = (repr(loc), str(err.get("msg")))
        if key in seen:
            continue
        seen.add(key)
        err["loc"] = loc
        out.append(_json_safe(err))
    return out
