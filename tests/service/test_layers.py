"""The layers of docs/ARCHITECTURE.md, held: every module's imports (top level and inside
functions alike) point the way the rooms allow. A new arrow fails here, before review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# room -> the rooms of regtrain it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "service.contract": {"service.settings"},
    "service.data": {"service.contract", "service.settings"},
    "service.store": {"service.contract", "service.data", "service.settings"},
    "service.queue": {"service.settings"},
    "service.notify": {"service.contract", "service.store", "service.queue", "service.settings"},
    "service.submission": {
        "service.contract",
        "service.data",
        "service.store",
        "service.queue",
        "service.settings",
    },
    "service.api": {
        "service.contract",
        "service.data",
        "service.store",
        "service.queue",
        "service.notify",
        "service.submission",
        "service.settings",
        "service.version",
        # predictions run a trained checkpoint: the engine's inference, imported on first use
        "worker.training",
    },
    "service.cli": {"service", "worker"},
    "service.settings": set(),
    "service.version": set(),
    "service": set(),  # service/__init__.py: a docstring
    # the engine reads datasets through service.data (numpy and pyarrow, no store, no torch)
    "worker.training": {"service.contract", "service.data", "service.version"},
    "worker": {
        "service.contract",
        "service.data",
        "service.store",
        "service.queue",
        "service.notify",
        "service.submission",
        "service.settings",
        "service.version",
        "worker.training",
    },
}


def room(module: str) -> str:
    """The most specific room a dotted module name belongs to."""
    best = ""
    for name in ALLOWED:
        if name == "service" and module != "service":
            continue
        if (module == name or module.startswith(name + ".")) and len(name) > len(best):
            best = name
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"service", "worker"}}


MODULES = sorted(
    p for top in ("service", "worker") for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_the_way_the_rooms_allow(path: Path) -> None:
    own = room(module_name(path))
    assert own, f"{path} is in no room of docs/ARCHITECTURE.md"
    allowed = ALLOWED[own] | {own}
    wrong = sorted(
        name
        for name in imports(path)
        if (target := room(name))
        and target != own
        and not any(target == a or target.startswith(a + ".") for a in allowed)
    )
    assert not wrong, f"{path.relative_to(ROOT)} ({own}) imports {wrong}"
