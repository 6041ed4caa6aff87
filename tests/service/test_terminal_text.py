"""service.cli.terminal_text: what reaches a terminal from the server's text (no server needed;
tests/integration/test_cli_terminal.py runs the commands against one)."""

from __future__ import annotations

import io
import json

import pytest

from service.cli.terminal_text import UNSAFE, Printable, printable

CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))]
BIDI = [chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))]


@pytest.mark.parametrize("char", CONTROLS + BIDI, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_and_bidi_character_is_shown_escaped(char: str) -> None:
    shown = printable(f"a{char}b")
    assert UNSAFE.search(shown) is None
    escape = f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    assert shown == f"a{escape}b"


def test_text_and_the_lines_and_tables_made_of_it_pass() -> None:
    text = "job\tétude 中文 ✓ — ok\nnext line"
    assert printable(text) == text


def test_a_stream_escapes_text_split_over_writes_alike() -> None:
    sink = io.StringIO()
    out = Printable(sink)
    print("\x1b]0;PWNED", end="", file=out)
    print("\x07\x1b[2J", file=out, flush=True)
    assert sink.getvalue() == "\\x1b]0;PWNED\\x07\\x1b[2J\n"
    del out  # the wrapped stream is the caller's: not closed with the wrapper
    assert not sink.closed


def test_json_output_needs_no_escaping_and_is_left_as_it_is() -> None:
    doc = json.dumps({"name": "\x1b]0;PWNED\x07\u202e"}, indent=2)
    assert "\\u001b" in doc and "\\u202e" in doc and UNSAFE.search(doc) is None
    assert printable(doc) == doc


def test_a_line_break_in_a_cell_cannot_fake_a_row() -> None:
    from service.cli.tables import table

    shown = table([["a\nb1234  fake  succeeded", "x\ty\r"]], ["NAME", "STATUS"]).splitlines()
    assert len(shown) == 2 and shown[1].split() == ["a\\nb1234", "fake", "succeeded", "x\\ty\\r"]
