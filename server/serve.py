"""Serve worlds over gRPC: ``worldweave serve [--host 127.0.0.1] [--port 50051] [--data-dir DIR] [--generator NAME]``.

Worlds saved with SaveWorld go to ``--data-dir`` and are listed again (and loadable) after a restart. Ctrl-C or
SIGTERM stops gracefully: calls in flight get ``--grace`` seconds. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from worldweave.bridge.generators.registry import available
from worldweave.server.app import ServerConfig, create_server, tune_malloc
from worldweave.server.service import MIB, ServerLimits

logger = logging.getLogger("worldweave.serve")


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"generator option {text!r} must be KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags."""
    defaults = ServerLimits()
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=50051, help="TCP port; 0 picks a free one (default 50051)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for saved worlds (default: no saving)")
    parser.add_argument("--generator", default="reproject", help=f"generator backend, one of {available()}")
    parser.add_argument("--generator-option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="generator constructor option; VALUE is JSON or a plain string (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device of world memory (default cpu)")
    parser.add_argument("--max-poses", type=int, default=defaults.max_poses_per_call, help="most poses per call")
    parser.add_argument("--max-message-mib", type=int, default=defaults.max_message_bytes // MIB,
                        help="largest gRPC message, MiB (clients must allow the same)")
    parser.add_argument("--workers", type=int, default=8, help="threads for engine work")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds calls in flight get at shutdown")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default mmap and trim thresholds (see worldweave.server.app.tune_malloc)")


async def serve(address: str, config: ServerConfig, grace: float) -> None:
    """Run a server on ``address`` until SIGINT or SIGTERM, then stop gracefully."""
    server, port = create_server(address, config)
    await server.start()
    host = address.rsplit(":", 1)[0]
    logger.info("worldweave serving on %s:%d (generator %s, data dir %s)", host, port, config.generator,
                config.data_dir or "none: worlds are not saved")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping: calls in flight get %.1f s", grace)
    await server.stop(grace)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``worldweave serve``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.no_malloc_tuning:
        tune_malloc()
    config = ServerConfig(
        data_dir=args.data_dir,
        generator=args.generator,
        generator_options=dict(args.generator_option),
        device=args.device,
        limits=ServerLimits(max_poses_per_call=args.max_poses, max_message_bytes=args.max_message_mib * MIB),
        workers=args.workers,
    )
    asyncio.run(serve(f"{args.host}:{args.port}", config, args.grace))
    return 0
