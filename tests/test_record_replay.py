"""Record and replay: ``worldweave serve --record DIR`` logs a world's state-changing requests with hashes of their
results; ``worldweave replay LOG`` rebuilds the world from its seed, re-runs the log and reports the first difference.

The demo session runs at 64x48 (the demo's own default is 320x240), 200 steps of its walk, on the CPU default
generator (``continue``, re-run on replay). Corrupted, truncated and foreign logs are made from a real log by
cutting or flipping its bytes; the crash is a real ``worldweave serve`` subprocess killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import make_scene
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import PreconditionError, StorageError, WorldweaveError
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.cli import main as worldweave
from worldweave.server.record_log import FORMAT_VERSION, MAGIC, LogReader, LogWriter, Record, Recording, not_recorded
from worldweave.server.replay import EXIT_DIFFERS, EXIT_IDENTICAL, EXIT_TRUNCATED, EXIT_UNUSABLE, replay
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.rigs import stereo_rig
from worldweave.sim_clients.rollouts import Rollouts

WIDTH, HEIGHT, STEPS = 64, 48, 200
"""The demo session of the test: 64x48 frames (the demo's default is 320x240), 200 steps of its walk."""


def demo_walk(steps: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Intrinsics, list[np.ndarray]]:
    """The ``worldweave demo`` world: its seed view (rgb, depth, c2w) of the room, its intrinsics at WIDTH x HEIGHT,
    and the c2w poses of its closed-loop walk."""
    scene = make_scene("room", seed=0)
    intrinsics = Intrinsics.from_fov(WIDTH, HEIGHT, fov_x_deg=75.0)
    trajectory = closed_loop(scene, steps + 1)
    start = scene.render(trajectory.poses[0], intrinsics)
    return (start.rgb, start.depth, start.pose.matrix), intrinsics, [p.matrix for p in trajectory.poses[1:]]


def box(lo: float, hi: float) -> pb.Region:
    return pb.Region(box=pb.Box(min_m=pb.Vec3(x=lo, y=lo, z=lo), max_m=pb.Vec3(x=hi, y=hi, z=hi)))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Iterator[tuple[BackgroundServer, Path]]:
    """A server as ``worldweave serve --record DIR`` starts it (default generator, no warm-up), and DIR."""
    folder = tmp_path_factory.mktemp("records")
    with BackgroundServer(config=ServerConfig(record_dir=folder, warm_up=False)) as running:
        yield running, folder


@pytest.fixture(scope="module")
def demo_log(recorded) -> Path:
    """The log of a 200-step demo session with a checkpoint, a restore and the three edits on the way."""
    server, folder = recorded
    seed, intrinsics, poses = demo_walk(STEPS)
    with WorldClient(server.address) as client:
        client.worlds.create([seed], intrinsics, world_id="demo")
        rollouts = Rollouts(client)
        for i, pose in enumerate(poses):
            client.step("demo", pose)
            if i == 20:
                checkpoint = rollouts.checkpoint("demo")
            if i == 40:
                rollouts.restore("demo", checkpoint.checkpoint_id)
                client.edits.remove_region("demo", box(-1.0, 0.0))
                client.edits.recolor_region("demo", box(0.0, 1.0), [255, 0, 0])
                points = np.random.default_rng(0).uniform(-1, 1, (200, 3)).astype(np.float32)
                client.edits.insert_points("demo", points, np.full((200, 3), 7, np.uint8))
                client.edits.label_region("demo", box(0.0, 1.0), 3, 9)
    (log,) = folder.glob("demo.*.wwlog")
    return log


def test_a_recorded_demo_session_replays_bit_identical(demo_log, capsys) -> None:
    code = worldweave(["replay", str(demo_log), "--no-progress"])
    out = capsys.readouterr().out
    assert code == EXIT_IDENTICAL, out
    assert out.startswith("identical: 207 records (1 create, 200 step, 1 checkpoint, 1 restore, 1 remove, 1 recolor, "
                          "1 insert, 1 label), 200 frames"), out
    assert "generator 'continue' re-run" in out


def test_a_changed_result_is_reported_at_its_record(demo_log, tmp_path) -> None:
    """A log whose 4th step says its frame or its memory came out otherwise: replay names that record and what."""
    for field in ("rgb", "memory"):
        reader = LogReader(demo_log)
        tampered = tmp_path / f"{field}.wwlog"
        writer = LogWriter(tampered, reader.header)
        for number, record in reader.records():
            if number == 5:  # record 1 is the creation: record 5 is the 4th step, frame 4 (the seed is frame 0)
                meta = dict(record.meta)
                if field == "rgb":
                    meta["frames"] = [{**meta["frames"][0], "rgb": "0" * 32}]
                else:
                    meta["memory"] = "0" * 32
                record = Record(record.kind, record.request, meta, record.arrays)
            writer.append(record)
        writer.close()
        reader.close()
        report = replay(tampered)
        assert report.exit_status == EXIT_DIFFERS and report.difference_at == 5, report.describe()
        assert report.describe().startswith("differs at record 5: step, frame id 4: "), report.describe()
        assert ("frame 4's rgb differs" if field == "rgb" else "the memory hash differs") in report.difference


def test_a_truncated_or_corrupted_tail_replays_up_to_it_and_says_where(demo_log, tmp_path, capsys) -> None:
    data = demo_log.read_bytes()
    reader = LogReader(demo_log)
    ends = [reader._file.tell() for _ in reader.records()]  # the byte where each record ends
    reader.close()
    start_of_50 = ends[48]
    cut = tmp_path / "cut.wwlog"
    cut.write_bytes(data[:start_of_50 + 20])  # record 50 cut inside its body, as a crash mid-write leaves it
    code = worldweave(["replay", str(cut), "--no-progress"])
    out = capsys.readouterr().out
    assert code == EXIT_TRUNCATED, out
    assert out.startswith("identical: 49 records (1 create, 42 step, 1 checkpoint, 1 restore, 1 remove, 1 recolor, "
                          "1 insert, 1 label), 42 frames"), out
    assert f"stopped at record 50 of 50: truncated tail at byte {start_of_50} of {start_of_50 + 20}" in out

    flipped = bytearray(data[:ends[30]])
    flipped[ends[29] - 10] ^= 0xFF  # a byte inside record 30's body
    corrupt = tmp_path / "corrupt.wwlog"
    corrupt.write_bytes(bytes(flipped))
    report = replay(corrupt)
    assert report.exit_status == EXIT_TRUNCATED and report.records == 29
    assert f"stopped at record 30 of 30: corrupted record (CRC mismatch) at byte {ends[28]}" in report.describe()


def test_a_log_of_another_format_version_or_not_a_log_is_refused_clearly(demo_log, tmp_path, capsys) -> None:
    data = bytearray(demo_log.read_bytes())
    data[len(MAGIC):len(MAGIC) + 4] = struct.pack("<I", FORMAT_VERSION + 1)
    other = tmp_path / "other.wwlog"
    other.write_bytes(bytes(data))
    assert worldweave(["replay", str(other), "--no-progress"]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert f"format version {FORMAT_VERSION + 1}; this worldweave reads format version {FORMAT_VERSION} only" in err
    assert "Traceback" not in err
    with pytest.raises(StorageError, match="not a worldweave record log"):
        replay(Path(__file__))


def test_a_generator_that_cannot_be_rerun_is_played_back_from_the_log(tmp_path, noisy_generator) -> None:
    seed, intrinsics, poses = demo_walk(12)
    config = ServerConfig(record_dir=tmp_path, warm_up=False)
    with BackgroundServer(config=config, generator=noisy_generator()) as server, WorldClient(server.address) as client:
        client.worlds.create([seed], intrinsics, world_id="noisy")
        client.step("noisy", np.stack(poses[:5]))  # one step of five poses
        for pose in poses[5:]:
            client.step("noisy", pose)
        client.step("noisy", np.stack(poses[:3]), rig=stereo_rig(intrinsics, baseline_m=0.2))  # 3 poses x 2 cameras
    (log,) = tmp_path.glob("noisy.*.wwlog")
    report = replay(log)
    assert report.exit_status == EXIT_IDENTICAL, report.describe()
    assert report.mode == "playback" and report.frames == 18 and report.records == 10


def test_recording_is_off_unless_asked_and_a_world_may_opt_out(recorded, server) -> None:
    """``server`` (conftest) has no record folder: asking it to record is FAILED_PRECONDITION. On a recording server
    a world created with ``record`` false writes no log."""
    seed, intrinsics, _ = demo_walk(8)
    with WorldClient(server.address) as client:
        assert "recording" not in client.info.capabilities
        with pytest.raises(PreconditionError, match="--record DIR"):
            client.worlds.create([seed], intrinsics, world_id="asks", record=True)
        assert "asks" not in [w.world_id for w in client.worlds.list()]
    recording, folder = recorded
    with WorldClient(recording.address) as client:
        assert "recording" in client.info.capabilities  # the handshake says CreateWorld may ask to record
        client.worlds.create([seed], intrinsics, world_id="quiet", record=False)
        client.step("quiet", seed[2])
    assert not list(folder.glob("quiet.*")) and recording.server.registry.recording.folder == folder
    asked = Recording(folder, every_world=False, generator=EchoGenerator)  # --record DIR --record-worlds asked
    assert asked.opener(pb.CreateWorldRequest()) is not_recorded
    assert asked.opener(pb.CreateWorldRequest(record=True)) is not not_recorded


def test_a_server_killed_while_recording_leaves_a_log_that_replays(tmp_path) -> None:
    """A real ``worldweave serve --record DIR`` killed with SIGKILL while a client steps it as fast as it can: every
    answered step is in the log, which replays identical up to its last complete record."""
    seed, intrinsics, poses = demo_walk(60)
    answered = []
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--no-warm-up",
               "--record", str(tmp_path)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line, f"serve exited early with code {process.poll()}"
            if "serving on" in line:
                port = int(line.rsplit("serving on ", 1)[1].split()[0].rsplit(":", 1)[1])
        with WorldClient(f"127.0.0.1:{port}", retry=None) as client:
            client.worlds.create([seed], intrinsics, world_id="crash")

            def walk() -> None:
                with contextlib.suppress(WorldweaveError):  # the server dies under the walk
                    for pose in poses:
                        client.step("crash", pose, timeout_s=30)
                        answered.append(pose)

            walker = threading.Thread(target=walk)
            walker.start()
            while len(answered) < 6 and walker.is_alive():
                time.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
            walker.join(timeout=30)
        assert process.wait(timeout=10) == -signal.SIGKILL and 6 <= len(answered) < len(poses)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    (log,) = tmp_path.glob("crash.*.wwlog")
    report = replay(log)  # a record cut short by the kill is a truncated tail: identical up to it
    assert report.exit_status in (EXIT_IDENTICAL, EXIT_TRUNCATED) and report.difference is None, report.describe()
    assert report.frames >= len(answered) and report.records == 1 + report.frames, report.describe()
