"""Autosave through the atomic storage: after every N changes, once a change is S seconds old, and at shutdown; a
server that would autosave without a data folder refuses to start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import PreconditionError
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.registry import AutosavePolicy
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.world_state import sphere_region


def saved_version(data_dir: Path, world_id: str) -> int | None:
    """The version in a world's saved manifest, or None when it has no save."""
    manifest = data_dir / world_id / "manifest.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


def wait_for_save(data_dir: Path, world_id: str, version: int, timeout_s: float = 10.0) -> float:
    """Seconds until the save of ``world_id`` reaches ``version``; fails after ``timeout_s``."""
    started = time.monotonic()
    while saved_version(data_dir, world_id) != version:
        assert time.monotonic() - started < timeout_s, f"no save at version {version}: {saved_version(data_dir, world_id)}"
        time.sleep(0.05)
    return time.monotonic() - started


def start(data_dir: Path, policy: AutosavePolicy) -> BackgroundServer:
    return BackgroundServer(config=ServerConfig(data_dir=data_dir, autosave=policy), generator=EchoGenerator())


def test_saves_after_every_n_changes(tmp_path):
    frames, intrinsics = wall_seed(32, 24)
    with start(tmp_path, AutosavePolicy(every_changes=2)) as server, WorldClient(server.address) as client:
        client.worlds.create(frames, intrinsics, world_id="counted")  # creating a world is its first change
        time.sleep(0.3)
        assert saved_version(tmp_path, "counted") is None
        client.step("counted", yaw_poses(2)[1])
        wait_for_save(tmp_path, "counted", 2)
        assert {w.world_id: w.saved for w in client.worlds.list()} == {"counted": True}
        client.step("counted", yaw_poses(3)[1])
        time.sleep(0.3)
        assert saved_version(tmp_path, "counted") == 2
        client.edits.remove_region("counted", sphere_region([3.0, 0.0, 1.5], 0.2))
        wait_for_save(tmp_path, "counted", 4)  # edits count too


def test_saves_once_a_change_is_s_seconds_old(tmp_path):
    frames, intrinsics = wall_seed(32, 24)
    with start(tmp_path, AutosavePolicy(every_s=0.4)) as server, WorldClient(server.address) as client:
        client.worlds.create(frames, intrinsics, world_id="timed")
        wait_for_save(tmp_path, "timed", 1)
        client.step("timed", yaw_poses(2)[1])
        assert wait_for_save(tmp_path, "timed", 2) < 5.0


def test_unsaved_changes_are_saved_at_shutdown(tmp_path):
    frames, intrinsics = wall_seed(32, 24)
    with start(tmp_path, AutosavePolicy(every_changes=100)) as server, WorldClient(server.address) as client:
        client.worlds.create(frames, intrinsics, world_id="late")
        client.step("late", yaw_poses(2)[1])
        assert saved_version(tmp_path, "late") is None
    assert saved_version(tmp_path, "late") == 2
    with start(tmp_path, AutosavePolicy()) as server, WorldClient(server.address) as client:
        assert client.worlds.load("late").version == 2


def test_autosave_needs_a_data_folder(tmp_path):
    with pytest.raises(PreconditionError, match="autosave needs a data folder"):
        BackgroundServer(config=ServerConfig(autosave=AutosavePolicy(every_s=1.0)), generator=EchoGenerator()).start()
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--autosave-every", "3"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "--autosave-every and --autosave-seconds need --data-dir" in finished.stderr
