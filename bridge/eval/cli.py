"""Evaluate spatial memory and generation: ``worldweave eval KIND [OPTIONS]``, one evaluation per KIND."""

from __future__ import annotations

from worldweave.bridge.cli_help import KindRouter

EVAL_KINDS: dict[str, tuple[str, str]] = {
    "rgbd": ("worldweave.bridge.eval.rgbd", "fuse real RGB-D frames, render held-out poses from memory, score them"),
    "procedural": ("worldweave.bridge.eval.procedural", "memory ablations on procedural scenes with exact ground truth"),
}

_ROUTER = KindRouter("eval", EVAL_KINDS, "which evaluation to run")
add_arguments, run = _ROUTER.add_arguments, _ROUTER.run
