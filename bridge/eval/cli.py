"""Evaluate spatial memory and generation: ``worldweave eval KIND [OPTIONS]``, one evaluation per KIND."""

# Each module in EVAL_KINDS defines add_arguments(parser) and run(args) -> int, like the top-level subcommands;
# it is imported only when its kind runs, so `worldweave eval --help` stays fast.

from __future__ import annotations

import argparse
import importlib

from worldweave.bridge.cli_help import module_parser

EVAL_KINDS: dict[str, tuple[str, str]] = {
    "rgbd": ("worldweave.bridge.eval.rgbd", "fuse real RGB-D frames, render held-out poses from memory, score them"),
    "procedural": ("worldweave.bridge.eval.procedural", "memory ablations on procedural scenes with exact ground truth"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = "\n".join(f"  {name:<12} {help_text}" for name, (_, help_text) in EVAL_KINDS.items())
    parser.epilog = f"kinds:\n{kinds}\n\n'worldweave eval KIND --help' describes each."
    parser.add_argument("kind", choices=sorted(EVAL_KINDS), help="which evaluation to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the evaluation's own arguments")


def run(args: argparse.Namespace) -> int:
    module_name, help_text = EVAL_KINDS[args.kind]
    module = importlib.import_module(module_name)
    parser = module_parser(f"worldweave eval {args.kind}", module, help_text)
    return int(module.run(parser.parse_args(args.options)) or 0)
