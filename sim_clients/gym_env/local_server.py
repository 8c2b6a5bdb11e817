"""``worldweave serve`` as a child process on a free loopback port, for clients given no address.

The SDK never imports the engine or the server, so the server runs as its own process: it binds
127.0.0.1 port 0, the operating system picks a free port, and the port is read back from the server's start-up log
line (no race between choosing a port and binding it). The log goes to an unnamed temporary file, so a chatty server
never blocks on a full pipe; its tail is quoted when the server fails to start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence

SERVING_LINE = re.compile(r"worldweave serving on (127\.0\.0\.1:\d+)")
"""The line ``worldweave serve`` logs once it listens (``worldweave.server.serve``)."""
FORBIDDEN_ARGS = ("--host", "--port")
"""Flags the local server sets itself: loopback only, a port the OS picks."""


class LocalServerError(RuntimeError):
    """The local server did not start; the message quotes the end of its log."""


def _stop(process: subprocess.Popen, log, grace_s: float) -> None:
    """SIGTERM (the server stops gracefully), then SIGKILL after ``grace_s`` seconds; close the log."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


class LocalServer:
    """Starts ``worldweave serve --host 127.0.0.1 --port 0 [extra_args]`` and waits until it listens.

    ``extra_args``: further ``worldweave serve`` flags (``["--generator", "reproject"]``, ``["--data-dir", DIR]``),
    never ``--host`` or ``--port``. ``startup_timeout_s``: how long to wait for the server to listen, seconds.
    ``address`` is ``127.0.0.1:PORT``. ``stop()`` (or leaving the ``with`` block, or garbage collection) stops it.
    """

    def __init__(self, extra_args: Sequence[str] = (), *, startup_timeout_s: float = 120.0) -> None:
        extra_args = [str(arg) for arg in extra_args]
        for arg in extra_args:
            if arg.split("=", 1)[0] in FORBIDDEN_ARGS:
                raise ValueError(
                    f"the local server binds 127.0.0.1 on a free port itself; drop {arg!r} from its arguments"
                )
        command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                   *extra_args]
        log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._finalizer = weakref.finalize(self, _stop, self.process, log, 10.0)
        self._log = log
        self.address = self._wait_for_address(" ".join(command), startup_timeout_s)

    def _log_text(self) -> str:
        return os.pread(self._log.fileno(), 1 << 20, 0).decode("utf-8", errors="replace")

    def _wait_for_address(self, command: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            found = SERVING_LINE.search(self._log_text())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                tail = self._log_text()[-3000:]
                self.stop()
                code = self.process.returncode
                raise LocalServerError(f"`{command}` exited with code {code} before serving:\n{tail}")
            if time.monotonic() > deadline:
                tail = self._log_text()[-3000:]
                self.stop()
                raise LocalServerError(
                    f"`{command}` did not report serving within {timeout_s} s (a busy machine, or a generator that "
                    f"loads slowly: pass a longer startup timeout); its log ends:\n{tail}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM; SIGKILL after 10 s). Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
