"""Watch a server's worlds in the browser: worldweave view --server 127.0.0.1:50051 [--port 8080] [--token TOKEN].

Opens a page (viser, served from the installed package: no internet needed) where you pick one of the server's
worlds and see its point cloud, kept current as the world changes (coloured by RGB, source, height, or confidence
when the server sends it; thinned to --max-points). "Render memory here" and "Step the world here" act at the
browser's camera and show the generated frame beside the memory render, with the step's stage timings. Every step
of the world, whoever makes it, shows its camera, its frame beside the memory render and its timings; anchors are
drawn as frustums. Binds
127.0.0.1; another interface needs the server's token (--token or WORLDWEAVE_AUTH_TOKEN), which every browser is
then asked for (prefer the variable: a --token shows in the process list). Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from worldweave.proto.errors import InvalidInputError, WorldweaveError
from worldweave.sim_clients.viewer.scene import DEFAULT_MAX_POINTS

TOKEN_ENVIRONMENT_VARIABLE = "WORLDWEAVE_AUTH_TOKEN"
logger = logging.getLogger("worldweave.viewer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``view`` flags."""
    parser.add_argument("--server", default="127.0.0.1:50051", help="worldweave gRPC server host:port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface the page binds (default %(default)s: this machine only; another needs the token)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port of the page; 0 picks a free one (default %(default)s)")
    parser.add_argument("--token", default=None,
                        help=f"the server's bearer token (default: ${TOKEN_ENVIRONMENT_VARIABLE}); the page shows its "
                             "tenant's worlds")
    parser.add_argument("--tls", action="store_true", help="connect to the server over TLS (system roots)")
    parser.add_argument("--tls-root-certificates", type=Path, default=None, metavar="PEM",
                        help="PEM roots to trust for the server's certificate (implies --tls)")
    parser.add_argument("--world", default=None, metavar="WORLD_ID",
                        help="world a new page shows first (default: the first in the list)")
    parser.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS, metavar="N",
                        help="most points drawn per world; bigger clouds are thinned (default %(default)s)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the server at start (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``worldweave view``: serve the page until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per page connection otherwise
    from worldweave.sim_clients.viewer.app import Viewer  # viser and grpc load only when the viewer runs

    token = args.token or os.environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None
    try:
        viewer = Viewer(
            args.server, token=token, tls=args.tls, tls_root_certificates=args.tls_root_certificates,
            host=args.host, port=args.port, max_points=args.max_points, world_id=args.world,
            connect_timeout_s=args.connect_timeout,
        )
        viewer.start()
    except InvalidInputError as error:
        logger.error("%s", error)
        return 2
    except WorldweaveError as error:
        logger.error("%s", error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        viewer.close()
    return 0
