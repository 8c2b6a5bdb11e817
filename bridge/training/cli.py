"""``worldweave train KIND ...``: one trainer per kind, each in its own module.

Each module in ``TRAIN_KINDS`` defines ``add_arguments(parser)`` and ``run(args) -> int``, like the top-level
subcommands; it is imported only when its kind runs, so ``worldweave train --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

TRAIN_KINDS: dict[str, tuple[str, str]] = {
    "weaver": ("worldweave.bridge.training.weaver_train",
               "the learned weaver (per-pixel anchor weights and exposure gains) on procedural scenes and your RGB-D"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = "\n".join(f"  {name:<12} {help_text}" for name, (_, help_text) in TRAIN_KINDS.items())
    parser.epilog = f"kinds:\n{kinds}\n\n'worldweave train KIND --help' describes each."
    parser.add_argument("kind", choices=sorted(TRAIN_KINDS), help="what to train")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the trainer's own arguments")


def run(args: argparse.Namespace) -> int:
    module_name, help_text = TRAIN_KINDS[args.kind]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"worldweave train {args.kind}", description=module.__doc__ or help_text,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(args.options)) or 0)
