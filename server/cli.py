"""The ``worldweave`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module that defines ``add_arguments(parser)`` and ``run(args) -> int``; this
file only routes, and turns an error of worldweave's family into one line and exit status 2. Modules are imported
when their subcommand runs, so ``worldweave --help`` stays fast; help is formatted by ``bridge/cli_help.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worldweave.bridge.cli_help import HelpFormatter, module_parser
from worldweave.proto.errors import WorldweaveError
from worldweave.server.version import server_version

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("worldweave.bridge.demo", "walk a generated room and back; write a video, the cloud and scores to out/demo"),
    "serve": ("worldweave.server.serve", "serve worlds over gRPC to simulators and agents (binds 127.0.0.1)"),
    "eval": ("worldweave.bridge.eval.cli", "evaluate memory and generation: 'worldweave eval rgbd DATASET ...'"),
    "train": ("worldweave.bridge.training.cli", "train learned parts: 'worldweave train weaver [--rgbd DATASET] ...'"),
    "gateway": ("worldweave.sim_clients.gateway.server", "ZMQ/msgpack gateway for engines without gRPC (Unity, Unreal)"),
    "view": ("worldweave.sim_clients.viewer.cli", "watch a server's worlds live in the browser (binds 127.0.0.1)"),
    "record": ("worldweave.sim_clients.recording", "render a world along a TUM pose file, with LiDAR, into an MCAP for Foxglove"),
    "replay": ("worldweave.server.replay", "re-run a world's record log (serve --record DIR) and check it is bit-identical"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldweave",
        description="A generative world with spatial memory, served over gRPC to simulators and agents.",
        epilog="'worldweave COMMAND --help' describes each command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {server_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:  # --help, --version, or a usage error (exit 2)
        parser.parse_args(argv)
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    args = module_parser(f"worldweave {name}", module, help_text).parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except WorldweaveError as error:  # bad input on the command line or on disk: no traceback
        print(f"worldweave {name}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
