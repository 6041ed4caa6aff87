"""docs/THREATS.md names, for every attack, the test that covers it: each test file it names
exists and each test function it names is defined in that file (a renamed or deleted test makes
the row a claim nobody checks), and every surface the issue tracker asked for has a section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THREATS = ROOT / "docs" / "THREATS.md"
SURFACES = (
    "Tenants",
    "Uploads",
    "Datasets by URI",
    "Webhooks",
    "Sweeps and searches",
    "Predict and exports",
    "Streams",
    "Dashboard",
    "Command line output",
    "Races",
)
CELL = re.compile(r"`([^`]+)`")


def _test_cells() -> list[str]:
    cells = []
    for line in THREATS.read_text().splitlines():
        if line.startswith("|") and not line.startswith("| ---") and not line.startswith("| attack"):
            cells += [c for c in CELL.findall(line.rsplit("|", 2)[-2]) if ".py" in c or c.startswith("…")]
    return cells


def test_every_named_test_exists() -> None:
    current: Path | None = None
    checked = 0
    for cell in _test_cells():
        path, _, name = cell.partition("::")
        if not path.startswith("…"):
            current = ROOT / "tests" / path
            assert current.is_file(), f"docs/THREATS.md names {path}, which does not exist"
        assert current is not None, f"{cell}: '…' with no file named before it"
        if name:
            # a name may end in … (a prefix), or carry a parametrize id
            stem = name.split("[")[0].rstrip("…").split(" ")[0]
            source = current.read_text()
            assert re.search(rf"def {re.escape(stem)}", source), f"{cell}: no test {stem} in {current.name}"
            checked += 1
    assert checked >= 40


def test_every_surface_has_its_section() -> None:
    headings = [
        line.removeprefix("## ") for line in THREATS.read_text().splitlines() if line.startswith("## ")
    ]
    for surface in SURFACES:
        assert any(h.startswith(surface) for h in headings), surface
