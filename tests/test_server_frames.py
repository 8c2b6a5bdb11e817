"""A real server on a free loopback port: unary render, the step stream, cancellation, and step order between
two clients of one world."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import DeadlineExceededError
from worldweave.proto.geometry import Intrinsics
from worldweave.server.app import BackgroundServer
from worldweave.sim_clients.client import WorldClient

WIDTH, HEIGHT = 64, 48
"""The seed size of conftest's ``world_id`` (``WALL_WIDTH``, ``WALL_HEIGHT``)."""


@pytest.fixture
def client(server):
    """A client of its own for each test (the shared one is per module): a cancelled stream or a missed deadline
    stays with the test that caused it. ``server`` and ``world_id`` are conftest's (echo server, fresh wall world)."""
    with WorldClient(server.address) as connected:
        yield connected


def test_render_returns_every_pose_in_the_asked_encodings(client, world_id):
    poses = yaw_poses(3)
    version = client.worlds.get(world_id).version
    raw = client.render(world_id, poses, depth="float16_m", coverage_mask=True)
    png = client.render(world_id, poses, image="png", depth="uint16_mm")
    assert len(raw) == 3
    for frame, pose, lossless in zip(raw, poses, png):
        assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.depth.shape == (HEIGHT, WIDTH)
        np.testing.assert_allclose(frame.pose, pose, atol=1e-9)
        assert frame.version == version and frame.frame_id is None
        assert frame.coverage == pytest.approx(frame.coverage_mask.mean())
        assert frame.coverage > 0.5, "the seed wall covers most of the view"
        np.testing.assert_array_equal(lossless.rgb, frame.rgb)
        np.testing.assert_allclose(lossless.depth, frame.depth, atol=3e-3)
        covered = frame.coverage_mask
        np.testing.assert_allclose(frame.depth[covered].mean(), 3.0, rtol=0.1)
    assert client.worlds.get(world_id).version == version, "render does not change memory"


def test_full_hd_raw_frames_fit(client, world_id):
    full_hd = Intrinsics.from_fov(1920, 1080, fov_x_deg=70.0)
    frame = client.render(world_id, yaw_poses(1), intrinsics=full_hd, depth="float16_m")[0]
    assert frame.rgb.shape == (1080, 1920, 3) and frame.depth.shape == (1080, 1920)


def test_step_and_step_stream_keep_order_ids_and_versions(client, world_id):
    first = client.step(world_id, yaw_poses(2))
    assert [f.pose_index for f in first] == [0, 1] and first[0].frame_id + 1 == first[1].frame_id
    assert first[0].version < first[1].version
    assert {"retrieve", "render_weave", "generate", "integrate", "total"} <= set(first[0].timings_s)

    poses = yaw_poses(6)
    chunks = [poses[0], poses[1:3], poses[3:6]]  # one pose, then chunks of two and three
    frames = list(client.step_stream(world_id, chunks, depth="uint16_mm"))
    assert [(f.request_index, f.pose_index) for f in frames] == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    ids = [f.frame_id for f in frames]
    assert ids == list(range(first[1].frame_id + 1, first[1].frame_id + 7))
    assert all(a.version < b.version for a, b in zip(frames, frames[1:]))
    for frame, pose in zip(frames, poses):
        np.testing.assert_allclose(frame.pose, pose, atol=1e-9)
        assert frame.depth is not None and frame.rgb.shape == (HEIGHT, WIDTH, 3)
    assert client.worlds.get(world_id).frame_count == ids[-1] + 1


def test_a_cancelled_stream_stops_its_work(client, world_id):
    start = client.worlds.get(world_id).frame_count
    endless = (pose for pose in itertools.cycle(yaw_poses(8)))
    received = 0
    for _ in client.step_stream(world_id, endless):
        received += 1
        if received == 3:
            break  # closing the generator cancels the call
    time.sleep(0.3)
    settled = client.worlds.get(world_id).frame_count
    time.sleep(0.3)
    assert client.worlds.get(world_id).frame_count == settled, "the server stopped stepping"
    assert 3 <= settled - start < 3 + 16, "only the few requests already in flight were stepped"
    assert client.step(world_id, yaw_poses(1))[0].frame_id == settled, "the world is free again"


def test_a_stream_past_its_deadline_is_cancelled(client, world_id):
    endless = (pose for pose in itertools.cycle(yaw_poses(8)))
    with pytest.raises(DeadlineExceededError, match="took longer than its 0.3 s deadline"):
        for _ in client.step_stream(world_id, endless, timeout_s=0.3):
            pass
    assert len(client.step(world_id, yaw_poses(1))) == 1


def test_a_step_past_its_deadline_raises_and_the_next_step_works(client, world_id):
    with pytest.raises(DeadlineExceededError, match="Step took longer than its 0.0001 s deadline"):
        client.step(world_id, yaw_poses(16), timeout_s=0.0001)  # far more work than the 1 ms floor of a deadline
    frames = client.step(world_id, yaw_poses(2))
    assert [f.pose_index for f in frames] == [0, 1]
    assert frames[1].frame_id == client.worlds.get(world_id).frame_count - 1


def test_steps_on_one_client_reuse_one_stream_across_worlds(client, world_id):
    seed, intrinsics = wall_seed(WIDTH, HEIGHT)
    other = client.worlds.create(seed, intrinsics).world_id
    try:
        a, b, c = (client.step(w, yaw_poses(1))[0] for w in (world_id, other, world_id))
        assert b.request_index == a.request_index + 1 and c.request_index == a.request_index + 2
        assert c.frame_id == a.frame_id + 1
    finally:
        client.worlds.delete(other)


def test_two_clients_on_one_world_keep_step_order(server, world_id):
    results: dict[int, list] = {}

    def drive(index: int) -> None:
        with WorldClient(server.address) as own:
            results[index] = list(own.step_stream(world_id, [p for p in yaw_poses(10)]))

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [[f.frame_id for f in results[i]] for i in range(2)]
    for own in ids:
        assert own == sorted(own) and len(own) == 10
    merged = sorted(ids[0] + ids[1])
    assert merged == list(range(merged[0], merged[0] + 20)), "no frame id twice, none skipped"
    by_id = {f.frame_id: f.version for i in range(2) for f in results[i]}
    versions = [by_id[i] for i in merged]
    assert versions == sorted(versions) and len(set(versions)) == 20, "steps ran one at a time, in order"


class CountingEcho(EchoGenerator):
    """Echo that records which world (by prompt) each call served and how many calls overlapped. Its counters are
    state shared between calls, so it is not ``deterministic`` (a generator model with scratch state, as the diffusers
    ones): the server gives its calls one at a time, in turns (tests/test_parallel_worlds.py covers the overlap of
    deterministic ones)."""

    deterministic = False

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.active = 0
        self.most_active = 0

    def generate(self, condition):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        time.sleep(0.005)
        self.prompts.append(condition.prompt)
        self.active -= 1
        return super().generate(condition)


def test_worlds_step_concurrently_and_take_turns_on_the_shared_generator():
    generator = CountingEcho()
    with BackgroundServer(generator=generator) as running:
        frames, intrinsics = wall_seed(WIDTH, HEIGHT)
        with WorldClient(running.address) as setup:
            for name in ("a", "b"):
                setup.worlds.create(frames, intrinsics, world_id=name, prompt=name)
        # The server's start-up warm-up steps with the host's generator too (prompt "", once per process: run alone,
        # this test's server is the first), and it ends before the server serves.
        generator.prompts.clear()

        def drive(name: str) -> None:
            with WorldClient(running.address) as own:
                for pose in yaw_poses(12):
                    own.step(name, pose)

        threads = [threading.Thread(target=drive, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert generator.most_active == 1, "the shared generator runs one call at a time"
    assert sorted(generator.prompts) == ["a"] * 12 + ["b"] * 12
    middle = generator.prompts[4:20]
    longest_run = max(len(list(run)) for _, run in itertools.groupby(middle))
    assert longest_run <= 3, f"worlds take turns on the generator, got {generator.prompts}"
