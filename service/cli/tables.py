"""Plain-text tables for the `regtrain` commands' human output (--json prints documents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [["" if v is None else fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def fmt(v: Any) -> str:
    """A cell: floats to 4 significant places (scientific when tiny or huge). A line break or
    tab inside server text is shown escaped, so a name cannot fake a row of the table (the
    other control characters are escaped on the way out by service.cli.terminal_text)."""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4f}"
    return str(v).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
