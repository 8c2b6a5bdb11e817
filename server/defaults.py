"""Defaults that the server's configuration (``app.ServerConfig``) and ``worldweave serve``'s flags share, kept in a
module that imports nothing heavy, so that ``worldweave serve --help`` loads neither torch nor the server."""

from __future__ import annotations

STOP_TIMEOUT_S = 30.0
"""At shutdown, after the grace period: how long saves of unsaved worlds and engine work still running may take,
seconds; then the server stops without them."""

METRICS_HOST = "127.0.0.1"
"""Interface of the metrics endpoint: this machine only, as it has no token and no TLS."""
