"""The installed worldweave version, without importing the server (``worldweave --version`` stays fast)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def server_version() -> str:
    """The installed worldweave version ("unknown" when run from a tree that was never installed)."""
    try:
        return version("worldweave")
    except PackageNotFoundError:
        return "unknown"
