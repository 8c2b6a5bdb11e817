"""Argument types shared by the ``worldweave`` subcommands (``argparse`` ``type=`` callables)."""

from __future__ import annotations

import argparse
import json


def key_value(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE)``: VALUE parsed as JSON (``3``, ``true``, ``[1, 2]``), else kept as a plain
    string (``best``, ``/path/to/weights``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
