"""The work budget per request, deadlines that release a world's lock, and a shutdown that always ends (issue 17,
item 1), on real servers on loopback and a ``worldweave serve`` process.

* The issue's requests (a capsule of radius 1e4 m, a box of half extents 1e4 m, 2,097,152 rays of range 1e9 m)
  are refused with RESOURCE_EXHAUSTED naming the limit and their cost, and the world renders right after.
* A large query is decoded on the thread pool, not on the event loop: a call answered on the loop completes while
  its decoding is held up.
* A query within its budget but past its deadline stops between chunks: the next Render of the world succeeds.
* Queries split into chunks answer exactly as the engine does in one piece.
* ``docs/limits.md``'s table states the handshake's limits (names and defaults).
* ``worldweave serve`` with calls in flight, one of them uninterruptible, exits on SIGTERM within grace + a few s.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import DeadlineExceededError, InvalidInputError, LimitExceededError, WorldweaveError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import world_state
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.decoding import OFFLOAD_BYTES
from worldweave.server.limits import ServerLimits, chunk_parts
from worldweave.server.scheduling import default_engine_threads, default_queued_total
from worldweave.sim_clients.client import WorldClient

LIMITS_DOC = Path(__file__).resolve().parents[1] / "docs" / "limits.md"
ROOMY = ServerLimits(max_ray_voxels=1 << 60, max_shape_voxels=1 << 60, max_pixels_per_call=2 * 64 * 48)
"""Limits of the ``roomy`` server: queries far over the default budget are let through (to run past deadlines), and
at most two 64 x 48 frames per call."""


def away_rays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rays from the seed camera into the empty half-space behind it: (origins_m, directions)."""
    directions = np.random.default_rng(0).normal(size=(n, 3))
    directions[:, 0] = -np.abs(directions[:, 0]) - 0.1
    return np.tile([0.0, 0.0, 1.5], (n, 1)), directions


def renders(client: WorldClient, world_id: str) -> None:
    """The world answers a Render within 10 s, with a frame of the seed's size."""
    frame = client.render(world_id, yaw_poses(1)[0], timeout_s=10.0)[0]
    assert frame.rgb.shape == (48, 64, 3)


@pytest.fixture(scope="module")
def roomy() -> Iterator[tuple[BackgroundServer, WorldClient, str]]:
    """A server with ``ROOMY`` limits, a client of it and a wall world on it."""
    with BackgroundServer(config=ServerConfig(limits=ROOMY), generator=EchoGenerator()) as running:
        with WorldClient(running.address) as client:
            frames, intrinsics = wall_seed(64, 48)
            yield running, client, client.worlds.create(frames, intrinsics).world_id


# ------------------------------------------------------------------------------------------------ the cases


def test_a_capsule_of_radius_1e4_is_refused_and_the_world_still_renders(client: WorldClient, world_id: str):
    point = np.array([[0.0, 0.0, 1.0]])
    with pytest.raises(LimitExceededError,
                       match=r"max_shape_voxels = 17179869184 voxels.*capsules\[0\] alone searches 1e\+18"):
        client.queries.check_capsules(world_id, point, point, 1e4, timeout_s=10.0)
    renders(client, world_id)


def test_a_box_of_half_extents_1e4_is_refused_and_the_world_still_renders(client: WorldClient, world_id: str):
    with pytest.raises(LimitExceededError, match=r"CheckCollision costs 1e\+18 voxels, over .* max_shape_voxels"):
        client.queries.check_boxes(world_id, np.array([[0.0, 0.0, 1.0]]), np.full((1, 3), 1e4), np.array([[1.0, 0, 0, 0]]),
                           timeout_s=10.0)
    renders(client, world_id)


def test_2097152_rays_of_range_1e9_are_refused_and_the_world_still_renders(client: WorldClient, world_id: str):
    origins, directions = away_rays(1 << 21)
    with pytest.raises(LimitExceededError, match=r"Raycast costs 7617640398848 voxels, over this server's "
                                                 r"max_ray_voxels = 4294967296 voxels per call; 2097152 rays x "
                                                 r"3632374 voxels"):
        client.queries.raycast(world_id, origins, directions, 1e9, timeout_s=20.0)
    renders(client, world_id)


def test_a_query_within_its_budget_is_answered(client: WorldClient, world_id: str):
    point = np.array([[2.9, 0.0, 1.5]])
    assert client.queries.check_capsules(world_id, point, point + [0.0, 0.0, 0.2], 0.2).hit.tolist() == [True]
    origins, directions = away_rays(1 << 12)
    assert client.queries.raycast(world_id, origins, directions, 100.0).hit.sum() == 0  # 4096 rays x 5000 voxels


def test_a_large_query_is_decoded_off_the_event_loop_while_cheap_calls_complete(client, world_id, monkeypatch):
    decoding, go_on = threading.Event(), threading.Event()
    unpack = world_state.batch

    def held_batch(data: bytes, *args) -> np.ndarray:  # the large request's decoding waits for the cheap calls
        if len(data) >= OFFLOAD_BYTES:
            decoding.set()
            assert go_on.wait(timeout=60), "the cheap calls never completed"
        return unpack(data, *args)

    monkeypatch.setattr(world_state, "batch", held_batch)
    origins, directions = away_rays(1 << 17)  # two fields of 1.5 MiB
    with ThreadPoolExecutor(1) as pool:
        large = pool.submit(client.queries.raycast, world_id, origins, directions, 6.0)
        assert decoding.wait(timeout=60)
        # a call answered on the event loop completes meanwhile (the loop is not decoding)
        assert world_id in [world.world_id for world in client.worlds.list()]
        assert not large.done()
        go_on.set()
        assert large.result(timeout=30).hit.shape == (1 << 17,)


def test_render_and_step_are_held_to_the_pixel_budget(roomy):
    _, client, world_id = roomy
    with pytest.raises(LimitExceededError, match=r"Render costs 9216 pixels, over this server's max_pixels_per_call "
                                                 r"= 6144 pixels per call; 3 pose\(s\) of 64x48"):
        client.render(world_id, yaw_poses(3))
    with pytest.raises(LimitExceededError, match="Step costs 9216 pixels, over this server's max_pixels_per_call"):
        client.step(world_id, yaw_poses(3))
    assert len(client.step(world_id, yaw_poses(2))) == 2


# ------------------------------------------------------------------------------------------------ deadlines, chunks


def test_a_query_past_its_deadline_stops_and_the_world_renders_promptly(roomy):
    _, client, world_id = roomy
    origins, directions = away_rays(1 << 18)  # ~0.5 ms a ray to the keys' end: a minute on two cores
    with pytest.raises(DeadlineExceededError):
        client.queries.raycast(world_id, origins, directions, 1e9, timeout_s=1.0)
    renders(client, world_id)  # in 10 s: the raycast stopped within a chunk, releasing the world's lock


def test_chunks_keep_within_their_cost_and_item_bounds():
    assert chunk_parts(np.array([5.0, 5.0, 20.0, 1.0, 1.0, 1.0, 1.0]), 10.0, 3) == [
        slice(0, 2), slice(2, 3), slice(3, 6), slice(6, 7),  # 10; 20 alone (over 10 by itself); 3 items; the rest
    ]
    assert chunk_parts(np.zeros(0), 10.0, 3) == [slice(0, 0)]


def test_chunked_answers_equal_the_engine_in_one_piece(roomy, monkeypatch):
    running, client, world_id = roomy
    monkeypatch.setattr(world_state, "QUERY_CHUNK_ITEMS", 7)
    rng = np.random.default_rng(1)
    origins = np.tile([0.0, 0.0, 1.5], (60, 1)) + rng.uniform(-0.3, 0.3, (60, 3))
    directions = rng.uniform([3.0, -4.0, -1.0], [3.0, 4.0, 4.0], (60, 3)) - origins  # at the wall and beside it
    starts = rng.uniform([2.5, -1.0, 1.0], [3.1, 1.0, 2.0], (40, 3))
    ends = starts + rng.normal(scale=0.1, size=(40, 3))
    radii = rng.uniform(0.0, 0.2, 40)
    rays = client.queries.raycast(world_id, origins, directions, 10.0)
    capsules = client.queries.check_capsules(world_id, starts, ends, radii)
    queries = running.server.registry.entry(world_id).world.queries  # the server is idle: no call uses it now
    f32 = np.float32
    engine_rays = queries.raycast(origins.astype(f32), directions.astype(f32), 10.0)
    engine_capsules = queries.collide_capsules(starts.astype(f32), ends.astype(f32), radii.astype(f32))
    assert 0 < rays.hit.sum() < 60 and 0 < capsules.hit.sum() < 40
    np.testing.assert_array_equal(rays.hit, engine_rays.hit)
    np.testing.assert_array_equal(rays.distance_m[rays.hit], engine_rays.distance_m[engine_rays.hit].astype(f32))
    np.testing.assert_array_equal(rays.unknown, engine_rays.ended_in_unknown)
    np.testing.assert_array_equal(capsules.hit, engine_capsules.hit)
    np.testing.assert_array_equal(capsules.clearance_m, engine_capsules.clearance_m.astype(f32))


def test_a_bad_row_in_a_later_chunk_is_named_with_its_chunk(roomy, monkeypatch):
    _, client, world_id = roomy
    monkeypatch.setattr(world_state, "QUERY_CHUNK_ITEMS", 7)
    origins, directions = away_rays(20)
    directions[16] = 0.0  # the engine refuses it: no direction to cast along
    with pytest.raises(InvalidInputError, match=r"directions\[2\] = \[0\.0, 0\.0, 0\.0\] has zero length \(row indices "
                                                r"here count from row 14 of the request\)"):
        client.queries.raycast(world_id, origins, directions, 10.0)


# ------------------------------------------------------------------------------------------------ the docs' table


def test_the_limits_table_states_the_handshake(client: WorldClient):
    rows = re.findall(r"^\| `(\w+)` \| (\d+|cores) \|", LIMITS_DOC.read_text(), flags=re.MULTILINE)
    by_machine = {"cores": default_queued_total(default_engine_threads())}
    documented = {name: by_machine[default] if default in by_machine else int(default) for name, default in rows}
    handshake = {field.name: getattr(client.info.limits, field.name) for field in pb.Limits.DESCRIPTOR.fields}
    assert documented == handshake


# ------------------------------------------------------------------------------------------------ shutdown


def test_serve_exits_on_sigterm_with_calls_in_flight(serve_process):
    """A raycast (stops between chunks) and one huge capsule (cannot be interrupted) are running at SIGTERM."""
    grace_s, stop_timeout_s = 1.0, 1.0
    command = [sys.executable, "-m", "worldweave.server.cli", "serve", "--port", "0", "--generator", "echo",
               "--no-warm-up", "--grace", str(grace_s), "--stop-timeout", str(stop_timeout_s),
               "--max-ray-voxels", str(1 << 60), "--max-shape-voxels", str(1 << 60)]
    outcomes: list[WorldweaveError] = []

    def call(work) -> None:
        try:
            work()
        except WorldweaveError as error:
            outcomes.append(error)

    with serve_process(command, r"serving on 127\.0\.0\.1:(\d+)") as port:
        client = WorldClient(f"127.0.0.1:{port}", timeout_s=120.0)
        frames, intrinsics = wall_seed(64, 48)
        rays_world, capsule_world = (client.worlds.create(frames, intrinsics).world_id for _ in range(2))
        origins, directions = away_rays(1 << 18)
        point = np.array([[0.0, 0.0, 1.0]])
        calls = [
            threading.Thread(target=call, args=(lambda: client.queries.raycast(rays_world, origins, directions, 1e9),)),
            threading.Thread(target=call, args=(lambda: client.queries.check_capsules(capsule_world, point, point, 300.0),)),
        ]
        for thread in calls:
            thread.start()
        time.sleep(1.0)  # both calls reach the server and start
        started = time.monotonic()  # leaving the block sends SIGTERM and expects exit code 0 within 15 s
    elapsed = time.monotonic() - started
    for thread in calls:
        thread.join(timeout=10.0)
    client.close()
    assert len(outcomes) == 2, "both calls were still running at SIGTERM, so neither got an answer"
    assert elapsed < grace_s + stop_timeout_s + 6.0
