"""``worldweave serve`` as users run it: a subprocess on a free port, a client, and a graceful SIGTERM."""

from __future__ import annotations

import sys

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.sim_clients.client import WorldClient


def test_serve_subcommand_serves_saves_and_stops_gracefully(tmp_path, serve_process):
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)]
    banner = r"worldweave serving on 127\.0\.0\.1:(\d+) \(generator reproject"
    with serve_process(command, banner, startup_s=25) as port:  # stopped by SIGTERM, expecting exit code 0
        with WorldClient(f"127.0.0.1:{port}") as client:
            assert "persistence" in client.info.capabilities and client.info.generator.name == "reproject"
            frames, intrinsics = wall_seed(32, 24)
            client.create_world(frames, intrinsics, world_id="cli")
            assert len(client.step("cli", yaw_poses(2))) == 2
            client.save_world("cli")
    assert (tmp_path / "cli" / "manifest.json").is_file()
