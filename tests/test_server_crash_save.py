"""kill -9 during a save (issue 17): the saved world survives whole, as one of its two saves, and the temporary
folder the killed save left is removed when the server starts again.

``worldweave serve --data-dir DATA`` runs as a subprocess; a world large enough that a save takes a noticeable time
(some 300,000 voxels at 5 mm) is saved once, stepped, and saved again, and the server is killed with
SIGKILL as soon as the second save's temporary folder ``DATA/.NAME.tmp-XXXXXXXX`` appears. A server started again on
the same folder must list and load the world at the first or the second save's version with that save's voxel count
(never a corrupt or missing world), and no ``.NAME.tmp-*`` folder may remain after its start-up.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import WorldweaveError
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.sim_clients.client import WorldClient

NAME = "crashy"
BANNER = re.compile(r"worldweave serving on 127\.0\.0\.1:(\d+)")


def temporaries(data_dir) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.name.startswith(f".{NAME}.tmp-"))


def start_serve(data_dir) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
               "--generator", "echo", "--no-warm-up"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line, f"serve exited early with code {process.poll()}"
        found = BANNER.search(line)
        if found:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(found.group(1))
    process.kill()
    raise AssertionError("serve did not report its port")


def test_kill_9_mid_save_keeps_a_whole_save_and_leaves_no_temporary(tmp_path):
    process, port = start_serve(tmp_path)
    try:
        with WorldClient(f"127.0.0.1:{port}", timeout_s=120.0) as client:
            frames, intrinsics = wall_seed(640, 480)
            client.worlds.create(frames * 2, intrinsics, world_id=NAME, voxel_size_m=0.005)
            first = client.worlds.save(NAME)
            client.step(NAME, yaw_poses(4))  # turning 10 degrees each way: memory gains the wall's new parts
            second = client.worlds.get(NAME)
            assert second.version > first.version and second.voxel_count > first.voxel_count
            saving = threading.Thread(target=lambda: _ignore_errors(client.worlds.save, NAME), daemon=True)
            seen: list[str] = []
            saving.start()
            deadline = time.monotonic() + 30.0
            while not seen and time.monotonic() < deadline and saving.is_alive():
                seen = temporaries(tmp_path)
                if not seen:
                    time.sleep(0.0005)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
            assert seen, "the second save finished before its temporary folder was seen: make the world larger"
            saving.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    # The killed save left its temporary folder (unless the swap had just completed).
    left_behind = temporaries(tmp_path)

    config = ServerConfig(data_dir=tmp_path, warm_up=False)
    with BackgroundServer(config=config, generator=EchoGenerator()) as restarted:
        assert temporaries(tmp_path) == [], f"still there after start-up: {temporaries(tmp_path)} (was {left_behind})"
        with WorldClient(restarted.address, timeout_s=120.0) as client:
            listed = {info.world_id: info for info in client.worlds.list()}
            assert NAME in listed and listed[NAME].saved, listed
            loaded = client.worlds.load(NAME)
            saves = {(first.version, first.voxel_count), (second.version, second.voxel_count)}
            assert (loaded.version, loaded.voxel_count) in saves, (loaded.version, loaded.voxel_count, saves)
            frame, = client.render(NAME, yaw_poses(1))
            assert frame.coverage > 0.5
    print(f"killed with {seen} on disk; left {left_behind}; loaded version {loaded.version} "
          f"({loaded.voxel_count} voxels) of saves {sorted(saves)}")


def _ignore_errors(call, *args) -> None:
    with contextlib.suppress(WorldweaveError):  # the server is killed under this call: its error is expected
        call(*args)
