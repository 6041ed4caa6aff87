"""What the `regtrain` client commands write: the server's text made inert for a terminal.

A server's documents carry text that tenants wrote or that came from their data: job and sweep
names, dataset names taken from file names, error messages, sweep warnings, worker names, log
lines. Printed raw, a control character in it is an instruction to the terminal, not text:
`ESC ] 0 ; … BEL` sets the window's title, `ESC [ 2 J` clears the screen, others move the cursor
over lines already printed or, on some terminals, type an answer back into the shell; and a bidi
override (U+202A–U+202E, U+2066–U+2069) makes a line read otherwise than its characters run.

So every client command writes through `Printable` (client_commands.run wraps standard output
and standard error once, for every command): C0 controls but the newline and the tab (which the
commands' own lines and tables are made of), DEL, C1 controls and the bidi controls are shown
escaped (`\\x1b`, `\\u202e`), so the reader sees that something was there. `--json` output is
JSON as json.dumps writes it: with ensure_ascii (its default) every control character and every
non-ASCII one is already a `\\uXXXX` escape (ESC is `\\u001b`), so nothing in it is touched.
"""

from __future__ import annotations

import io
import re
from typing import TextIO

# C0 but \t and \n; DEL and C1; the bidi embeddings, overrides and isolates (and the marks
# LRM, RLM, ALM, which reorder text around them too).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character that a terminal would act on shown as its escape."""
    return UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Printable(io.TextIOBase, TextIO):
    """A text stream that writes `printable(text)` to the stream it wraps. Escaping one
    character at a time needs no state across writes, so text split over several writes is
    escaped alike."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        """Nothing: the wrapped stream is the caller's, neither flushed nor closed when this
        wrapper goes (a flush at garbage collection into a closed pipe would print an error)."""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def buffer(self) -> io.BufferedIOBase:  # type: ignore[override]
        raise io.UnsupportedOperation("the server's text is written as text, never as bytes")

    @property
    def line_buffering(self) -> bool:
        return bool(self.stream.line_buffering)
