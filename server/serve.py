"""Serve worlds over gRPC: ``worldweave serve [--host 127.0.0.1] [--port 50051] [--data-dir DIR] [--generator NAME]
[--depth-estimator NAME]``.

One generator (``--generator``, ``--generator-option KEY=VALUE``) is built at start-up and shared by every world.
A generator that returns no depth (``wan-vace``, ``sd-inpaint``) also needs a depth estimator
(``--depth-estimator depth-anything``, ``--depth-estimator-option KEY=VALUE``), built once and shared the same way;
without one, ``serve`` exits at start-up saying so.

Worlds saved with SaveWorld go to ``--data-dir`` and are listed again (and loadable) after a restart; with
``--autosave-every N`` / ``--autosave-seconds S`` the server saves them itself (and at shutdown). Ctrl-C or SIGTERM
stops gracefully: calls in flight get ``--grace`` seconds. Binds 127.0.0.1 unless told otherwise.

Security (``docs/security.md``): ``--auth-token-file FILE`` makes every call carry ``authorization: Bearer <token>``
of a token in FILE, whose ``TOKEN TENANT ROLE`` lines give each token its tenant (the worlds it sees) and role
(``read-write`` or ``read-only``); a FILE holding one bare token, or the ``WORLDWEAVE_AUTH_TOKEN`` environment
variable, is one read-write token of the default tenant. A malformed FILE stops start-up (exit 2) naming its line.
``--tls-cert`` and ``--tls-key`` (PEM) serve TLS only. Binding another interface without TLS logs a warning: frames,
worlds and the tokens would cross the network in clear text.

Record and replay (docs/rollouts.md): ``--record DIR`` writes each world's state-changing requests, with hashes of
their results, to an append-only log (fsynced per request) that ``worldweave replay LOG`` re-runs.

Monitoring (docs/metrics.md): ``--metrics-port PORT`` serves Prometheus metrics (step stage times, requests by RPC
and status, worlds, voxels, anchors, queue depth, RSS) at http://127.0.0.1:PORT/metrics; ``--log-requests`` logs one
line per request (rpc, world, tenant, status, ms) on the logger worldweave.requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worldweave.bridge.cli_values import key_value
from worldweave.bridge.generators.registry import DEFAULT_GENERATOR, DEPTH_ESTIMATORS, available
from worldweave.proto.errors import InvalidInputError, NotFoundError, PreconditionError
from worldweave.proto.malloc import tune_malloc
from worldweave.server.auth import TokenTable, read_token_file
from worldweave.server.defaults import METRICS_HOST, STOP_TIMEOUT_S
from worldweave.server.scheduling import QueueLimits, default_engine_threads, default_queued_total
from worldweave.server.limits import MIB, ServerLimits

if TYPE_CHECKING:  # the server (torch, numba) is imported where it starts, so that 'worldweave serve --help' is fast
    from worldweave.server.app import ServerConfig

logger = logging.getLogger("worldweave.serve")
TOKEN_ENVIRONMENT_VARIABLE = "WORLDWEAVE_AUTH_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags."""
    defaults = ServerLimits()
    queues = QueueLimits()
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=50051, help="TCP port; 0 picks a free one (default 50051)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder where SaveWorld and --autosave-* save worlds, listed again after a restart "
                             "(default: none, worlds are not saved)")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, metavar="NAME",
                        help=f"generator backend, one of {', '.join(available())} (default %(default)s)")
    parser.add_argument("--generator-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="generator constructor option; VALUE is JSON or a plain string (repeatable)")
    parser.add_argument("--depth-estimator", default="", metavar="NAME",
                        help=f"depth estimator for generators that return no depth, one of {', '.join(sorted(DEPTH_ESTIMATORS))} "
                             "(needed by wan-vace and sd-inpaint; one instance shared by every world)")
    parser.add_argument("--depth-estimator-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="depth estimator constructor option, e.g. model=FOLDER_OR_ID or device=cuda; VALUE is "
                             "JSON or a plain string (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device of world memory (default cpu)")
    parser.add_argument("--max-poses", type=int, default=defaults.max_poses_per_call, metavar="N",
                        help="most poses per call")
    parser.add_argument("--max-message-mib", type=int, default=defaults.max_message_bytes // MIB, metavar="MIB",
                        help="largest gRPC message, MiB (clients must allow the same)")
    parser.add_argument("--workers", type=int, default=default_engine_threads(), metavar="N",
                        help="threads for engine work (default: one per core this process may use, at most its "
                             "container's CPU limit: %(default)s); clients' calls run on all of them whenever they "
                             "wait")
    parser.add_argument("--adaptive-concurrency", action="store_true",
                        help="run clients' calls on as many --workers threads at once as measured to be worth it in "
                             "calls per second over each call's time, instead of on all: lower latency, fewer calls "
                             "per second where the work holds the GIL (small frames; docs/limits.md)")
    parser.add_argument("--max-pixels-per-call", type=int, default=defaults.max_pixels_per_call, metavar="N",
                        help="most pixels (poses x width x height) one Render or StepRequest produces (default "
                             "%(default)s; docs/limits.md)")
    parser.add_argument("--max-query-items", type=int, default=defaults.max_query_items, metavar="N",
                        help="most rays, points or shapes per query call (default %(default)s)")
    parser.add_argument("--max-insert-points", type=int, default=defaults.max_insert_points, metavar="N",
                        help="most points per InsertPoints call (default %(default)s)")
    parser.add_argument("--max-ray-voxels", type=int, default=defaults.max_ray_voxels, metavar="N",
                        help="most rays x reach in voxels per Raycast call (default %(default)s)")
    parser.add_argument("--max-shape-voxels", type=int, default=defaults.max_shape_voxels, metavar="N",
                        help="most collision search volume in voxels per CheckCollision call (default %(default)s)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="S", help="seconds calls in flight get at shutdown")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S, metavar="S",
                        help="after --grace, seconds that saves and engine work still running may take before the "
                             "server exits without them (default %(default)s)")
    parser.add_argument("--max-queued-per-world", type=int, default=queues.per_world, metavar="N",
                        help="most calls waiting for one world while another runs; more are refused at once with "
                             "RESOURCE_EXHAUSTED and a retry-after-ms hint (default %(default)s)")
    parser.add_argument("--max-queued-total", type=int, default=None, metavar="N",
                        help="most calls waiting server-wide for an engine thread (default: as many as --workers, so "
                             "admitted calls wait about one call's duration); more are refused the "
                             "same way, each told when its turn comes")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="report SERVING without compiling the engine's kernels first (then the first calls "
                             "compile them: seconds each, minutes without numba's cache)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="keep glibc's default mmap and trim thresholds and numpy's huge-page advice (by default "
                             "the thresholds are raised, so that frame-sized buffers stay in the heap instead of "
                             "costing page faults on every call, and large arrays skip huge pages, whose first touch "
                             "can wait tens of ms for the kernel to compact memory)")
    parser.add_argument("--auth-token-file", type=Path, default=None, metavar="FILE",
                        help="file of 'TOKEN TENANT ROLE' lines (ROLE read-write or read-only; # comments): every "
                             "call must carry one of its tokens and sees only its tenant's worlds; a file of one "
                             f"bare token (or {TOKEN_ENVIRONMENT_VARIABLE}) is one read-write tenant. See "
                             "docs/security.md")
    parser.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                        help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="PEM private key of --tls-cert")
    parser.add_argument("--autosave-every", type=int, default=0, metavar="N",
                        help="save a world after every N steps or edits that changed it; creating it counts as one "
                             "(needs --data-dir; 0: off)")
    parser.add_argument("--autosave-seconds", type=float, default=0.0, metavar="S",
                        help="save a world once a change has stayed unsaved S seconds (needs --data-dir; 0: off)")
    parser.add_argument("--record", type=Path, default=None, metavar="DIR",
                        help="write each world's state-changing requests, with hashes of their results, to an "
                             "append-only log in DIR (fsynced per request) that 'worldweave replay LOG' re-runs; see "
                             "docs/rollouts.md (default: off)")
    parser.add_argument("--record-worlds", choices=("all", "asked"), default="all",
                        help="with --record: 'all' records every world whose CreateWorld does not set record=false, "
                             "'asked' only those that set record=true (default %(default)s)")
    parser.add_argument("--record-no-fsync", action="store_true",
                        help="with --record: write each record without fsync: a crash of the server loses none, one "
                             "of the machine may lose the last ones (default: fsync each record before answering)")
    parser.add_argument("--viewer", type=int, default=None, metavar="PORT",
                        help="also serve the live viewer ('worldweave view') at http://127.0.0.1:PORT, as a child "
                             f"process (0 picks a free port; default: off); with a token it needs {TOKEN_ENVIRONMENT_VARIABLE}")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (0 picks a free port; "
                             "default: off). See docs/metrics.md")
    parser.add_argument("--metrics-host", default=METRICS_HOST, metavar="HOST",
                        help="interface of the metrics endpoint, which has no token and no TLS (default %(default)s)")
    parser.add_argument("--log-requests", action="store_true",
                        help="log one line per request: rpc, world, tenant, status, ms (logger worldweave.requests; "
                             "default: off)")
    cluster = parser.add_argument_group("cluster (docs/scaling.md; needs pip install 'worldweave[ray]')")
    cluster.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                         help="serve as the front door of worldweave replicas on Ray Serve: each world's calls go to "
                              "the replica holding it; ADDRESS joins that Ray cluster (auto, HOST:6379, "
                              "ray://HOST:10001), none starts a local one")
    cluster.add_argument("--replicas", type=int, default=2, metavar="N", help="replicas to start (default %(default)s)")
    cluster.add_argument("--worlds-per-replica", type=int, default=8, metavar="N",
                         help="worlds a replica holds in memory at once (default %(default)s)")
    cluster.add_argument("--max-replicas", type=int, default=None, metavar="N",
                         help="autoscale on queue depth between --replicas and N replicas: one more after 10 s with "
                              "over 2 calls open per replica, one fewer after 60 s under 0.5 (its worlds move through "
                              "the shared folder; none is lost) (default: no autoscaling)")
    cluster.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                         help="GPUs of each replica, fractional to share one (default %(default)s)")
    cluster.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="C",
                         help="CPUs of each replica (default %(default)s); its whole CPUs (at least 1) set its default "
                              "--workers; its kernels split over the node's cores that no replica's engine work "
                              "holds")
    cluster.add_argument("--shared-dir", type=Path, default=None, metavar="DIR",
                         help="folder every replica sees (same path on every node): worlds' saves and record logs "
                              "(default: DATA_DIR/cluster)")
    cluster.add_argument("--lease-idle-s", type=float, default=300.0, metavar="S",
                         help="seconds without a call after which a world is saved to the shared folder and unloaded "
                              "(default %(default)s)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only ("localhost", 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_tokens(token_file: Path | None) -> TokenTable | None:
    """The token table of ``token_file`` (``auth.read_token_file``), else the environment's one token; None when
    neither. ``InvalidInputError`` naming the file and line of a malformed file."""
    if token_file is not None:
        return read_token_file(token_file)
    token = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    return TokenTable.single(token) if token else None


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on now (the system's reason, e.g. "Address already in use"), or None.

    Probed before the generator is built, so a busy port fails at once in one line (grpc's own bind failure, which
    ``create_server`` also reports, comes after the build and with a log line of grpc's). Like grpc, the probe reuses
    an address still in TIME_WAIT from a server that just stopped."""
    if port == 0:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def check_tls_pair(cert_file: Path, key_file: Path) -> None:
    """Raise ``InvalidInputError`` naming both files unless ``key_file`` is the unencrypted PEM private key of the PEM
    certificate ``cert_file`` (OpenSSL's own check; grpc would only fail to bind the port, saying neither)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=lambda: b"")  # an encrypted key fails, as in grpc
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise InvalidInputError(f"the TLS private key {key_file} does not match the certificate {cert_file}") from None
        raise InvalidInputError(
            f"--tls-cert {cert_file} and --tls-key {key_file} are not a PEM certificate and its unencrypted PEM private "
            f"key ({error.reason or error})"
        ) from None
    except OSError as error:
        raise InvalidInputError(f"cannot read the TLS certificate {cert_file} or key {key_file}: {error.strerror}") from None


def start_viewer(host: str, port: int, viewer_port: int) -> subprocess.Popen:
    """Start ``worldweave view`` of the server at ``host:port`` on 127.0.0.1:``viewer_port`` as a child process: the
    viewer is an SDK client, which this layer never imports. It inherits the environment (the token in
    WORLDWEAVE_AUTH_TOKEN) and stderr, where it logs its address."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    command = [sys.executable, "-m", "worldweave.server.cli", "view", "--server", f"{target}:{port}", "--port", str(viewer_port)]
    return subprocess.Popen(command)


def freeze_startup_heap() -> None:
    """Collect what start-up left over, then take every object still alive (modules, compiled kernels, backends,
    warm-up results; worlds load on their first call, after this) out of the cyclic garbage collector's scans
    (``gc.freeze``): they live as long as the process, and a full collection holds the GIL while it walks them (about
    270,000 objects: 120-200 ms on the 2-core machine under load, stalling every call in flight)."""
    gc.collect()
    gc.freeze()


async def serve(address: str, config: ServerConfig, grace: float, viewer_port: int | None = None) -> None:
    """Run a server on ``address`` (and the viewer on ``viewer_port`` unless None) until SIGINT or SIGTERM, then stop
    gracefully."""
    from worldweave.server.app import create_server

    server, port = create_server(address, config)
    await server.start()
    freeze_startup_heap()
    host = address.rsplit(":", 1)[0]
    tls = config.tls_cert_file is not None
    logger.info("worldweave serving on %s:%d (generator %s, depth estimator %s, data dir %s, %s, %s)", host, port,
                config.generator, config.depth_estimator or "none", config.data_dir or "none: worlds are not saved",
                "TLS" if tls else "no TLS",
                f"bearer token required, tenants {', '.join(config.auth_tokens.tenants)}"
                if config.auth_tokens is not None else "no auth")
    if server.metrics_port is not None:
        metrics_host = config.metrics_host.strip("[]")
        logger.info("metrics at http://%s:%d/metrics%s", f"[{metrics_host}]" if ":" in metrics_host else metrics_host,
                    server.metrics_port, "" if is_loopback(metrics_host) else " (no token: readable by anyone who "
                                                                              "reaches the port)")
    if not tls and not is_loopback(host):
        logger.warning("serving %s without TLS: traffic%s is readable on the network; pass --tls-cert and --tls-key",
                       host, " and the tokens" if config.auth_tokens is not None else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    viewer = None if viewer_port is None else start_viewer(host, port, viewer_port)
    await stop.wait()
    if viewer is not None:
        viewer.terminate()
        try:
            viewer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            viewer.kill()
    logger.info("stopping: calls in flight get %.1f s", grace)
    if not await server.stop(grace):
        logger.warning("engine work still running %.1f s after the grace period: exiting without it",
                       config.stop_timeout_s)
        logging.shutdown()
        os._exit(0)  # its pool threads would keep the process alive, and asyncio.run would wait for their calls


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The ``ServerConfig`` of parsed ``serve`` flags (``add_arguments``); raises what ``run`` reports in one line (a
    malformed token file, a bad autosave setting). Loads the server's modules (torch, numba: seconds)."""
    from worldweave.server.app import ServerConfig
    from worldweave.server.registry import AutosavePolicy

    return ServerConfig(
        data_dir=args.data_dir,
        generator=args.generator,
        generator_options=dict(args.generator_option),
        depth_estimator=args.depth_estimator,
        depth_estimator_options=dict(args.depth_estimator_option),
        device=args.device,
        limits=ServerLimits(
            max_poses_per_call=args.max_poses, max_message_bytes=args.max_message_mib * MIB,
            max_pixels_per_call=args.max_pixels_per_call, max_query_items=args.max_query_items,
            max_insert_points=args.max_insert_points, max_ray_voxels=args.max_ray_voxels,
            max_shape_voxels=args.max_shape_voxels,
        ),
        workers=args.workers,
        adaptive_concurrency=args.adaptive_concurrency,
        auth_tokens=auth_tokens(args.auth_token_file),
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        autosave=AutosavePolicy(every_changes=args.autosave_every, every_s=args.autosave_seconds),
        queues=QueueLimits(per_world=args.max_queued_per_world,
                           total=default_queued_total(args.workers) if args.max_queued_total is None
                           else args.max_queued_total),
        warm_up=not args.no_warm_up,
        stop_timeout_s=args.stop_timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        log_requests=args.log_requests,
        record_dir=args.record,
        record_every_world=args.record_worlds == "all",
        record_fsync=not args.record_no_fsync,
    )


def run_cluster(args: argparse.Namespace) -> int:
    """``worldweave serve --ray``: the front door over replicas on Ray Serve (``server.cluster.ray_cluster``)."""
    from worldweave.server.cluster.ray_cluster import INSTALL_HINT, ray_installed

    if not ray_installed():
        logger.error("%s", INSTALL_HINT)
        return 2
    from worldweave.server.auth import server_credentials
    from worldweave.server.cluster import ray_cluster

    try:
        tokens = auth_tokens(args.auth_token_file)
        credentials = server_credentials(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        return ray_cluster.run(args, tokens, credentials)
    except (InvalidInputError, PreconditionError) as error:
        logger.error("%s", error)
        return 2


def run(args: argparse.Namespace) -> int:
    """Entry point of ``worldweave serve``: checks the flags, the ports and the TLS files (exit 2 in one line each)
    before it loads the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.autosave_every or args.autosave_seconds) and args.data_dir is None:
        logger.error("--autosave-every and --autosave-seconds need --data-dir")
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        logger.error("TLS needs both --tls-cert and --tls-key")
        return 2
    for flag, seconds in (("--grace", args.grace), ("--stop-timeout", args.stop_timeout)):
        if not 0 <= seconds < float("inf"):
            logger.error("%s must be a finite number of seconds >= 0, got %s", flag, seconds)
            return 2
    if args.workers < 1:
        logger.error("--workers must be at least 1, got %d", args.workers)
        return 2
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        logger.error("--metrics-port must be 0..65535, got %d", args.metrics_port)
        return 2
    if args.viewer is not None and (args.tls_cert is not None or args.auth_token_file is not None):
        logger.error("--viewer works without TLS, with no token or the one in %s; otherwise run 'worldweave view "
                     "--server HOST:PORT' (with --token, --tls-root-certificates) yourself", TOKEN_ENVIRONMENT_VARIABLE)
        return 2
    busy = bind_error(args.host, args.port)
    if busy is not None:
        logger.error("cannot listen on %s:%d: %s (is another server there? pick another --port, or 0 for a free one)",
                     args.host, args.port, busy)
        return 2
    busy = bind_error(args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    if busy is not None:
        logger.error("cannot serve metrics on %s:%d: %s (pick another --metrics-port, or 0 for a free one)",
                     args.metrics_host, args.metrics_port, busy)
        return 2
    if args.tls_cert is not None:
        try:
            check_tls_pair(args.tls_cert, args.tls_key)
        except InvalidInputError as error:
            logger.error("%s", error)
            return 2
    if args.ray is not None:
        return run_cluster(args)
    if not args.no_malloc_tuning:
        tune_malloc()
    try:
        config = server_config(args)
        asyncio.run(serve(f"{args.host}:{args.port}", config, args.grace, args.viewer))
    except (InvalidInputError, NotFoundError, PreconditionError) as error:
        # A bad token file, TLS file or autosave setting; an unknown backend, missing weights or bad option; a generator
        # without depth and no depth estimator.
        logger.error("%s", error)
        return 2
    return 0
