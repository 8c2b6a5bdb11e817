"""Serve worlds over gRPC: ``worldweave serve [--host 127.0.0.1] [--port 50051] [--data-dir DIR] [--generator NAME]
[--depth-estimator NAME]``.

One generator (``--generator``, ``--generator-option KEY=VALUE``) is built at start-up and shared by every world.
A generator that returns no depth (``wan-vace``, ``sd-inpaint``) also needs a depth estimator
(``--depth-estimator depth-anything``, ``--depth-estimator-option KEY=VALUE``), built once and shared the same way;
without one, ``serve`` exits at start-up saying so.

Worlds saved with SaveWorld go to ``--data-dir`` and are listed again (and loadable) after a restart; with
``--autosave-every N`` / ``--autosave-seconds S`` the server saves them itself (and at shutdown). Ctrl-C or SIGTERM
stops gracefully: calls in flight get ``--grace`` seconds. Binds 127.0.0.1 unless told otherwise.

Security: ``--auth-token-file FILE`` (or the ``WORLDWEAVE_AUTH_TOKEN`` environment variable) makes every call carry
``authorization: Bearer <token>``; ``--tls-cert`` and ``--tls-key`` (PEM) serve TLS only. Binding another interface
without TLS logs a warning: frames, worlds and the token would cross the network in clear text.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
from pathlib import Path

from worldweave.bridge.cli_values import key_value
from worldweave.bridge.generators.registry import DEPTH_ESTIMATORS, available
from worldweave.proto.errors import InvalidInputError, NotFoundError, PreconditionError
from worldweave.server.app import ServerConfig, create_server, tune_malloc
from worldweave.server.registry import AutosavePolicy
from worldweave.server.service import MIB, ServerLimits

logger = logging.getLogger("worldweave.serve")
TOKEN_ENVIRONMENT_VARIABLE = "WORLDWEAVE_AUTH_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags."""
    defaults = ServerLimits()
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=50051, help="TCP port; 0 picks a free one (default 50051)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for saved worlds (default: no saving)")
    parser.add_argument("--generator", default="reproject", help=f"generator backend, one of {available()}")
    parser.add_argument("--generator-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="generator constructor option; VALUE is JSON or a plain string (repeatable)")
    parser.add_argument("--depth-estimator", default="", metavar="NAME",
                        help=f"depth estimator for generators that return no depth, one of {sorted(DEPTH_ESTIMATORS)} "
                             "(needed by wan-vace and sd-inpaint; one instance shared by every world)")
    parser.add_argument("--depth-estimator-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="depth estimator constructor option, e.g. model=FOLDER_OR_ID or device=cuda; VALUE is "
                             "JSON or a plain string (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device of world memory (default cpu)")
    parser.add_argument("--max-poses", type=int, default=defaults.max_poses_per_call, help="most poses per call")
    parser.add_argument("--max-message-mib", type=int, default=defaults.max_message_bytes // MIB,
                        help="largest gRPC message, MiB (clients must allow the same)")
    parser.add_argument("--workers", type=int, default=8, help="threads for engine work")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds calls in flight get at shutdown")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default mmap and trim thresholds (see worldweave.server.app.tune_malloc)")
    parser.add_argument("--auth-token-file", type=Path, default=None,
                        help=f"file holding the bearer token every call must carry (or set {TOKEN_ENVIRONMENT_VARIABLE})")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--autosave-every", type=int, default=0, metavar="N",
                        help="save a world after every N steps or edits that changed it; creating it counts as one "
                             "(needs --data-dir; 0: off)")
    parser.add_argument("--autosave-seconds", type=float, default=0.0, metavar="S",
                        help="save a world once a change has stayed unsaved S seconds (needs --data-dir; 0: off)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_token(token_file: Path | None) -> str | None:
    """The token from ``token_file`` (surrounding whitespace stripped) or the environment; None when neither."""
    if token_file is not None:
        return token_file.read_text().strip()
    return os.environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None


async def serve(address: str, config: ServerConfig, grace: float) -> None:
    """Run a server on ``address`` until SIGINT or SIGTERM, then stop gracefully."""
    server, port = create_server(address, config)
    await server.start()
    host = address.rsplit(":", 1)[0]
    tls = config.tls_cert_file is not None
    logger.info("worldweave serving on %s:%d (generator %s, depth estimator %s, data dir %s, %s, %s)", host, port,
                config.generator, config.depth_estimator or "none", config.data_dir or "none: worlds are not saved",
                "TLS" if tls else "no TLS",
                "bearer token required" if config.auth_token else "no auth")
    if not tls and not is_loopback(host):
        logger.warning("serving %s without TLS: traffic%s is readable on the network; pass --tls-cert and --tls-key",
                       host, " and the token" if config.auth_token else "")
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
    if (args.autosave_every or args.autosave_seconds) and args.data_dir is None:
        logger.error("--autosave-every and --autosave-seconds need --data-dir")
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        logger.error("TLS needs both --tls-cert and --tls-key")
        return 2
    try:
        token = auth_token(args.auth_token_file)
    except OSError as error:
        logger.error("cannot read the auth token file %s: %s", args.auth_token_file, error.strerror)
        return 2
    try:
        config = ServerConfig(
            data_dir=args.data_dir,
            generator=args.generator,
            generator_options=dict(args.generator_option),
            depth_estimator=args.depth_estimator,
            depth_estimator_options=dict(args.depth_estimator_option),
            device=args.device,
            limits=ServerLimits(max_poses_per_call=args.max_poses, max_message_bytes=args.max_message_mib * MIB),
            workers=args.workers,
            auth_token=token,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            autosave=AutosavePolicy(every_changes=args.autosave_every, every_s=args.autosave_seconds),
        )
        asyncio.run(serve(f"{args.host}:{args.port}", config, args.grace))
    except (InvalidInputError, NotFoundError, PreconditionError) as error:
        # A bad token, TLS file or autosave setting; an unknown backend, missing weights or bad option; a generator
        # without depth and no depth estimator.
        logger.error("%s", error)
        return 2
    return 0
