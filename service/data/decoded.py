"""A response body's Content-Encoding undone as it streams, a bounded piece at a time.

httpx decodes each chunk it receives in full: 1,828 bytes of `gzip, gzip` on the wire became a
gigabyte in one call, before any byte limit could look at it. Here the raw body is decoded by
zlib with an output bound per call (`max_length`), so whoever counts the decoded pieces stops a
bomb after at most one piece past its limit. One layer of gzip or deflate is decoded; stacked
or unknown encodings are refused (no origin of a dataset needs them, and each layer multiplies
what a few bytes may become).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from service.data.parsed import DataError

# What a request asks for: a server may compress once, which this module undoes.
ACCEPT_ENCODING = "gzip, deflate, identity"
PIECE = 1 << 20  # the most decoded bytes one call returns


class BoundedDecoder:
    """Feed it the raw body's chunks; it yields the decoded bytes in pieces of at most PIECE.
    Raises DataError for an encoding it will not decode, or a body that does not decode."""

    def __init__(self, content_encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise DataError(
                f"the response's Content-Encoding {content_encoding!r} stacks encodings; "
                "send the object plain or compressed once (gzip or deflate)"
            )
        self.coding = codings[0] if codings else None
        if self.coding not in (None, "gzip", "x-gzip", "deflate"):
            raise DataError(f"the response's Content-Encoding {content_encoding!r} is not gzip or deflate")
        self._z: zlib._Decompress | None = None
        if self.coding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.coding == "deflate":
            self._z = zlib.decompressobj()
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._z is None:
            yield data
            return
        try:
            yield from self._inflate(data)
        except zlib.error as e:
            if self.coding != "deflate" or self._started:
                raise DataError(f"the response does not decode as {self.coding}: {e}") from None
            # "deflate" is sent as zlib (RFC 9110) or, by some servers, raw: try raw once
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                yield from self._inflate(data)
            except zlib.error as e2:
                raise DataError(f"the response does not decode as deflate: {e2}") from None

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        assert self._z is not None
        while data or not self._z.eof:
            out = self._z.decompress(data, PIECE)
            data = self._z.unconsumed_tail
            if out:
                self._started = True
                yield out
            if self._z.eof or (not data and len(out) < PIECE):
                # all input taken and no output held back: wait for the next chunk
                return
