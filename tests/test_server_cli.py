"""``worldweave serve`` as users run it: a subprocess on a free port, a client, and a graceful SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from worldweave.server.testing import wall_seed, yaw_poses
from worldweave.sim_clients.client import WorldClient


def test_serve_subcommand_serves_saves_and_stops_gracefully(tmp_path):
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 25
        port = None
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, f"serve exited early with code {process.poll()}"
            found = re.search(r"worldweave serving on 127\.0\.0\.1:(\d+) \(generator reproject", line)
            port = int(found.group(1)) if found else None
        assert port, "serve did not report its port"
        with WorldClient(f"127.0.0.1:{port}") as client:
            assert "persistence" in client.info.capabilities and client.info.generator.name == "reproject"
            frames, intrinsics = wall_seed(32, 24)
            client.create_world(frames, intrinsics, world_id="cli")
            assert len(client.step("cli", yaw_poses(2))) == 2
            client.save_world("cli")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert (tmp_path / "cli" / "manifest.json").is_file()
