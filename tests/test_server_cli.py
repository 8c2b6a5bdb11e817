"""``worldweave serve`` as users run it: a subprocess on a free port, a client, and a graceful SIGTERM; and the one-line
errors (exit 2) of a busy port and of a missing dataset folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.server.cli import main
from worldweave.sim_clients.client import WorldClient


def test_serve_subcommand_serves_saves_and_stops_gracefully(tmp_path, serve_process):
    with socket.socket() as probe:  # a free port for the metrics endpoint
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--data-dir", str(tmp_path),
               "--metrics-port", str(metrics_port)]
    banner = r"worldweave serving on 127\.0\.0\.1:(\d+) \(generator continue"
    with serve_process(command, banner) as port:  # stopped by SIGTERM, expecting exit code 0
        with WorldClient(f"127.0.0.1:{port}") as client:
            assert "persistence" in client.info.capabilities and client.info.generator.name == "continue"
            frames, intrinsics = wall_seed(32, 24)
            client.worlds.create(frames, intrinsics, world_id="cli")
            assert len(client.step("cli", yaw_poses(2))) == 2
            client.worlds.save("cli")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'worldweave_step_stage_seconds_count{stage="total"} 1.0' in metrics  # one StepRequest, two frames
        assert "worldweave_worlds 1.0" in metrics
    assert (tmp_path / "cli" / "manifest.json").is_file()


CLI = [sys.executable, "-m", "worldweave.server.cli"]


def test_serve_on_a_busy_port_exits_2_in_one_line():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([*CLI, "serve", "--port", str(port), "--no-warm-up"], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines


def test_eval_rgbd_on_a_missing_folder_exits_2_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-dataset"
    assert main(["eval", "rgbd", str(missing), "--fuse", "0:9", "--eval", "10:12"]) == 2  # the console script's main
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"worldweave eval: error: no dataset folder {missing} (expected the 7-Scenes-like "
                                         "layout: see --help)"]
