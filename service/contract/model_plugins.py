"""Where model types come from: the built-in modules and the installed plugins, loaded once, on
first use, into the one registry (service.contract.architecture.MODEL_TYPES).

A plugin is a Python package an operator installs next to regtrain (never code a user sends):
it names a torch-free module under the entry-point group `regtrain.models`, and importing that
module registers its type with `@model_type(name, spec=..., factory="pkg.module:build")`, the
decorator the built-in types use. The factory that builds the `nn.Module` is a dotted path the
engine resolves, so the API process never imports torch.

Loading is lazy (the first validation of a spec, the first plan, or `load_model_types()` at
API and worker start) rather than at import: reading installed distributions' metadata is file
system work, and importing a regtrain module does none (tests/service/test_imports.py).

`REGTRAIN_DISABLED_MODEL_PLUGINS` (comma-separated entry-point names) hides installed plugins
from one process: an operator takes a type off a worker whose host cannot run it, and jobs of
that type wait for a worker that has it.
"""

from __future__ import annotations

import importlib
import os
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel

ENTRY_POINT_GROUP = "regtrain.models"

# The modules that register the built-in types; a new built-in type's module is listed here.
BUILTIN_MODULES: tuple[str, ...] = ("service.contract.architecture", "service.contract.sequence_models")

_lock = threading.RLock()
_loaded: list[str] | None = None


def disabled_plugins() -> set[str]:
    """The entry-point names this process must not load (REGTRAIN_DISABLED_MODEL_PLUGINS)."""
    raw = os.environ.get("REGTRAIN_DISABLED_MODEL_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_model_types() -> list[str]:
    """Import the built-in type modules and every enabled plugin (once per process); the names
    of the plugins loaded."""
    global _loaded
    with _lock:
        if _loaded is None:
            for module in BUILTIN_MODULES:
                importlib.import_module(module)
            hidden = disabled_plugins()
            loaded = []
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name not in hidden:
                    ep.load()
                    loaded.append(ep.name)
            _loaded = loaded
        return list(_loaded)


def model_specs() -> dict[str, type[BaseModel]]:
    """Each registered model type's config class, by its `type` name."""
    load_model_types()
    from service.contract.architecture import MODEL_TYPES

    return {name: t.spec for name, t in MODEL_TYPES.items()}


def known_model_types() -> list[str]:
    return sorted(model_specs())
