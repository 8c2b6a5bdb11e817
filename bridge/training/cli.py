"""Train the engine's learned parts: ``worldweave train KIND [OPTIONS]``, one trainer per KIND."""

from __future__ import annotations

from worldweave.bridge.cli_help import KindRouter

TRAIN_KINDS: dict[str, tuple[str, str]] = {
    "weaver": ("worldweave.bridge.training.weaver_cli",
               "the learned weaver (per-pixel anchor weights and exposure gains) on procedural scenes and your RGB-D"),
}

_ROUTER = KindRouter("train", TRAIN_KINDS, "what to train")
add_arguments, run = _ROUTER.add_arguments, _ROUTER.run
