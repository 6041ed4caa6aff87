"""URLs as the service shows them: with every password taken out, wherever it sits.

A database, broker or dataset URL may carry its secret in the userinfo (`u:secret@host`) or in
the query (`?password=…`, `?sslpassword=…`, `?token=…`, a presigned URL's signature), and
libpq and SQLAlchemy honour both. Whatever a document, a probe or a log line shows passes
through `redact_url` (or `redact_urls` for free text), so that no form of it reaches a reader.

The password is removed, not masked: the URL shown still works where the secret comes from
elsewhere (PGPASSWORD, ~/.pgpass, the environment), as `optuna.load_study` does with a sweep's
`study.storage`. Plain string surgery, not urllib's round trip, which rewrites `sqlite:////x`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# Query or fragment parameters whose value is a secret: password, pass, passwd, pwd,
# sslpassword, secret, client_secret, token, access_token, key, api_key, apikey, sslkey,
# auth, credential(s), X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, sig.
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|^sig$", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# A `name=value` pair of a keyword DSN whose name is a secret's (the value quoted or not).
_DSN_SECRET = re.compile(
    r"(?:^|\s)[\w.-]*(?:pass|pwd|secret|token|key|auth|credential|signature)[\w.-]*\s*=\s*"
    r"(?:'(?:[^'\\]|\\.)*'|\S*)",
    re.IGNORECASE,
)
# A URL inside text: up to a space or quote, less the punctuation that ends a sentence.
_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*[^\s'\"<>`).,;:]")


def redact_url(url: str) -> str:
    """`url` with its userinfo's password and every secret-named query or fragment parameter
    removed (the user name stays: `postgresql+psycopg://u@h/db`)."""
    head = _SCHEME.match(url)
    if head is None:  # libpq's `host=h password=x dbname=d`, or no URL at all
        return _DSN_SECRET.sub("", url).strip()
    scheme, rest = url[: head.end()], url[head.end() :]
    rest = _strip_password(rest)
    query_at = _first(rest, "?#")
    if query_at < 0:
        return scheme + rest
    return scheme + rest[:query_at] + _redact_tail(rest[query_at:])


def redact_urls(text: str) -> str:
    """Every URL inside free text (an exception's message, a log line) redacted."""
    return _IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _strip_password(rest: str) -> str:
    """The authority's `user:password@` made `user@`. The password runs to the `@` before the
    host, as SQLAlchemy reads it (it may hold `/`, `?` or `#`); an `@` left in the host part
    is taken as the password's too, so no piece of it stays behind as a host name."""
    at = rest.find("@")
    if at < 0:
        return rest
    userinfo = rest[:at]
    # a user name alone, or `user:` and anything; not `host:port/path/@x`, an @ in a path
    if not re.fullmatch(r"[^:/?#@]*(?::.*)?", userinfo, re.DOTALL) or re.fullmatch(
        r"[^:/?#@]*:\d*[/?#].*", userinfo, re.DOTALL
    ):
        return rest
    end = _first(rest[at + 1 :], "/?#")
    host = rest[at + 1 :] if end < 0 else rest[at + 1 : at + 1 + end]
    if "@" in host:
        at += 1 + host.rfind("@")
    user = rest[:at].split(":", 1)[0]
    return f"{user}@{rest[at + 1 :]}" if user else rest[at + 1 :]


def _redact_tail(tail: str) -> str:
    """`?query#fragment` (either may be absent) with secret-named parameters removed."""
    fragment_at = tail.find("#")
    query, fragment = (tail, "") if fragment_at < 0 else (tail[:fragment_at], tail[fragment_at:])
    out = ""
    if query:
        kept = _redact_params(query[1:])
        out = f"?{kept}" if kept else ""
    if fragment:
        kept = _redact_params(fragment[1:])
        out += f"#{kept}" if kept else ""
    return out


def _redact_params(params: str) -> str:
    """`a=1&password=x;b=2` without its secret-named pairs (names compared decoded)."""
    pieces = re.split(r"([&;])", params)
    kept: list[str] = []
    for piece in pieces[::2]:
        name = unquote_plus(piece.split("=", 1)[0]).strip()
        if piece and not SECRET_NAME.search(name):
            kept.append(piece)
    return "&".join(kept)


def _first(text: str, chars: str) -> int:
    found = [i for i in (text.find(c) for c in chars) if i >= 0]
    return min(found) if found else -1
