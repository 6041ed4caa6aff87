"""pytest imports test modules by their base name (rootdir conftest, no packages): two test files
of one name in different folders stop the whole suite at collection. Caught here by name, with
the pair, instead of by a collection error that names neither's purpose."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name != "conftest.py":
            seen[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
