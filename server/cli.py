"""The ``worldweave`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and ``run(args) -> int``; this
file only routes. Modules are imported when their subcommand runs, so ``worldweave --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("worldweave.bridge.demo", "build a small world in code, fuse it into memory, write a view and the cloud"),
    "serve": ("worldweave.server.serve", "serve worlds over gRPC to simulators and agents (binds 127.0.0.1)"),
    "eval": ("worldweave.bridge.eval.cli", "evaluate memory and generation: 'worldweave eval rgbd DATASET ...'"),
    "gateway": ("worldweave.sim_clients.gateway.server", "ZMQ/msgpack gateway for engines without gRPC (Unity, Unreal)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldweave",
        description="A generative world with spatial memory, served over gRPC to simulators and agents.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"worldweave {name}", description=module.__doc__ or help_text,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub_parser)
    return int(module.run(sub_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
