"""``AsyncWorldClient`` against a real server: the same surface and answers as ``WorldClient`` (lifecycle, frames,
point cloud, queries, edits), following the cloud while another task steps, deadlines, and errors."""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.proto.errors import (
    DeadlineExceededError,
    NotFoundError,
    ServerUnavailableError,
)
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.mirror import PointCloudMirror

WIDTH, HEIGHT = 64, 48


def test_same_public_surface_as_the_sync_client():
    public = {name for name in dir(WorldClient) if not name.startswith("_")}
    assert public == {name for name in dir(AsyncWorldClient) if not name.startswith("_")} - {"connect"}
    for name in public - {"close"}:
        sync, asynchronous = inspect.signature(getattr(WorldClient, name)), inspect.signature(getattr(AsyncWorldClient, name))
        assert list(sync.parameters) == list(asynchronous.parameters), name


def test_async_session_matches_the_sync_client(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    poses = yaw_poses(3)

    async def session() -> dict:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.create_world(frames, intrinsics, world_id="async")).world_id
            stepped = [(await client.step(world_id, pose))[0] for pose in poses]
            streamed = [frame async for frame in client.step_stream(world_id, poses)]
            rendered = await client.render(world_id, poses, depth="uint16_mm")
            origins = np.tile([0.0, 0.0, 1.5], (50, 1))
            directions = np.column_stack([np.ones(50), np.linspace(-0.5, 0.5, 50), np.zeros(50)])
            answers = {
                "frames": stepped + streamed, "renders": rendered,
                "ray": await client.raycast(world_id, origins, directions, 5.0),
                "nearest": await client.nearest_surface(world_id, origins + [2.5, 0, 0], 1.0),
                "spheres": await client.check_spheres(world_id, origins + [2.9, 0, 0], 0.1),
                "occupancy": await client.query_occupancy(world_id, origins + [1.0, 0, 0]),
                "crop": await client.crop_point_cloud(world_id, [2, -3, 0], [4, 3, 3]),
                "edit": await client.recolor_region(world_id, ws.sphere_region([3.0, 0.0, 1.5], 0.3), [9, 9, 9]),
            }
            mirror = PointCloudMirror()
            answers["version"] = mirror.update([chunk async for chunk in client.stream_point_cloud(world_id)])
            answers["mirror"] = mirror
            answers["worlds"] = [w.world_id for w in await client.list_worlds()]
            await client.delete_world(world_id)
            return answers

    got = asyncio.run(session())
    assert got["worlds"] == ["async"] and got["version"] == 8 and got["edit"].voxels > 0
    assert [f.frame_id for f in got["frames"]] == [1, 2, 3, 4, 5, 6]
    with WorldClient(server.address) as client:  # the same world again, driven by the sync client
        world_id = client.create_world(frames, intrinsics).world_id
        expected = [client.step(world_id, pose)[0] for pose in poses] + list(client.step_stream(world_id, poses))
        for a, b in zip(got["frames"], expected):
            np.testing.assert_array_equal(a.rgb, b.rgb)
        # The same chunk of poses: anchors are retrieved per chunk, so a pose's render depends on its chunk.
        np.testing.assert_array_equal(got["renders"][2].depth, client.render(world_id, poses, depth="uint16_mm")[2].depth)
        origins = np.tile([0.0, 0.0, 1.5], (50, 1))
        directions = np.column_stack([np.ones(50), np.linspace(-0.5, 0.5, 50), np.zeros(50)])
        ray = client.raycast(world_id, origins, directions, 5.0)
        np.testing.assert_array_equal(got["ray"].distance_m, ray.distance_m)
        np.testing.assert_array_equal(got["nearest"].points_m, client.nearest_surface(world_id, origins + [2.5, 0, 0], 1.0).points_m)
        np.testing.assert_array_equal(got["spheres"].clearance_m, client.check_spheres(world_id, origins + [2.9, 0, 0], 0.1).clearance_m)
        np.testing.assert_array_equal(got["occupancy"].states, client.query_occupancy(world_id, origins + [1.0, 0, 0]).states)
        np.testing.assert_array_equal(got["crop"].points_m, client.crop_point_cloud(world_id, [2, -3, 0], [4, 3, 3]).points_m)
        client.recolor_region(world_id, ws.sphere_region([3.0, 0.0, 1.5], 0.3), [9, 9, 9])
        mirror = PointCloudMirror()
        mirror.update(client.stream_point_cloud(world_id))
        np.testing.assert_array_equal(mirror.keys, got["mirror"].keys)
        np.testing.assert_array_equal(mirror.colors, got["mirror"].colors)
        client.delete_world(world_id)


def test_following_while_another_task_steps(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)

    async def session() -> list[int]:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.create_world(frames, intrinsics)).world_id
            mirror = PointCloudMirror()
            seen: list[int] = []
            caught_up = asyncio.Event()

            async def follow() -> None:
                async for chunk in client.stream_point_cloud(world_id, follow=True, timeout_s=30):
                    version = mirror.apply(chunk)
                    if version is not None:
                        seen.append(version)
                        caught_up.set()
                    if version == 4:
                        return

            follower = asyncio.create_task(follow())
            await asyncio.wait_for(caught_up.wait(), 30)  # the snapshot first, then the steps
            for pose in yaw_poses(3):
                await client.step(world_id, pose)
            await asyncio.wait_for(follower, 30)
            keys = [chunk async for chunk in client.stream_point_cloud(world_id)]
            assert len(mirror) == sum(len(c.keys) for c in keys)
            await client.delete_world(world_id)
            return seen

    seen = asyncio.run(session())
    assert seen[0] == 1 and seen[-1] == 4 and seen == sorted(seen)


def test_steps_from_many_tasks_run_one_at_a_time_and_deadlines_drop_the_stream(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)

    async def session() -> list[int]:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.create_world(frames, intrinsics)).world_id
            results = await asyncio.gather(*(client.step(world_id, pose) for pose in yaw_poses(6)))
            with pytest.raises(DeadlineExceededError, match="deadline"):
                await client.step(world_id, yaw_poses(2)[1], timeout_s=1e-4)
            after = await client.step(world_id, yaw_poses(2)[1])  # a fresh stream
            with pytest.raises(NotFoundError, match="no world 'nowhere'"):
                await client.step("nowhere", yaw_poses(2)[1])
            await client.delete_world(world_id)
            return sorted(f.frame_id for r in results for f in r) + [after[0].frame_id]

    ids = asyncio.run(session())
    assert ids[:6] == [1, 2, 3, 4, 5, 6] and ids[6] > 6


def test_no_server_is_an_error_that_says_what_to_do():
    with pytest.raises(ServerUnavailableError, match="is `worldweave serve` running"):
        asyncio.run(AsyncWorldClient.connect("127.0.0.1:1", connect_timeout_s=0.5))
