"""The installed regtrain's version, as the API reports it and every checkpoint records it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def regtrain_version() -> str:
    try:
        return version("regtrain")
    except PackageNotFoundError:  # run from a source tree without installing
        return "0+unknown"
