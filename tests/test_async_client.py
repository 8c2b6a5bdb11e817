"""``AsyncWorldClient`` against a real server: the same surface and answers as ``WorldClient`` (lifecycle, frames,
point cloud, queries, edits), following the cloud while another task steps, deadlines, and errors."""

from __future__ import annotations

import asyncio
from typing import get_args

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.proto.errors import (
    DeadlineExceededError,
    NotFoundError,
    ServerUnavailableError,
)
from worldweave.proto.enums import DEPTH_ENCODING_NAMES, IMAGE_ENCODING_NAMES, RETRIEVAL_NAMES
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import AsyncWorldClient, DepthEncoding, ImageEncoding, PointCloudMirror, Retrieval, WorldClient
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.api import ClientApi

WIDTH, HEIGHT = 64, 48


def test_both_clients_bind_the_one_description_and_add_only_connection_plumbing():
    assert issubclass(WorldClient, ClientApi) and issubclass(AsyncWorldClient, ClientApi)
    sync_own = {name for name in vars(WorldClient) if not name.startswith("_")}
    async_own = {name for name in vars(AsyncWorldClient) if not name.startswith("_")}
    assert sync_own == {"close", "timeout_s"} and async_own == {"close", "timeout_s", "connect"}
    assert set(get_args(ImageEncoding)) == set(IMAGE_ENCODING_NAMES.values())
    assert set(get_args(DepthEncoding)) == set(DEPTH_ENCODING_NAMES.values())
    assert set(get_args(Retrieval)) == set(RETRIEVAL_NAMES.values())


def test_async_session_matches_the_sync_client(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    poses = yaw_poses(3)

    async def session() -> dict:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.worlds.create(frames, intrinsics, world_id="async")).world_id
            stepped = [(await client.step(world_id, pose))[0] for pose in poses]
            streamed = [frame async for frame in client.step_stream(world_id, poses)]
            rendered = await client.render(world_id, poses, depth="uint16_mm")
            origins = np.tile([0.0, 0.0, 1.5], (50, 1))
            directions = np.column_stack([np.ones(50), np.linspace(-0.5, 0.5, 50), np.zeros(50)])
            answers = {
                "frames": stepped + streamed, "renders": rendered,
                "ray": await client.queries.raycast(world_id, origins, directions, 5.0),
                "nearest": await client.queries.nearest_surface(world_id, origins + [2.5, 0, 0], 1.0),
                "spheres": await client.queries.check_spheres(world_id, origins + [2.9, 0, 0], 0.1),
                "occupancy": await client.queries.occupancy(world_id, origins + [1.0, 0, 0]),
                "crop": await client.point_cloud.crop(world_id, [2, -3, 0], [4, 3, 3]),
                "edit": await client.edits.recolor_region(world_id, ws.sphere_region([3.0, 0.0, 1.5], 0.3), [9, 9, 9]),
            }
            mirror = PointCloudMirror()
            answers["version"] = mirror.update([chunk async for chunk in client.point_cloud.stream(world_id)])
            answers["mirror"] = mirror
            answers["helper"] = await client.point_cloud.mirror(world_id)
            answers["called"] = await client.call("GetWorld", pb.GetWorldRequest(world_id=world_id))
            answers["worlds"] = [w.world_id for w in await client.worlds.list()]
            await client.worlds.delete(world_id)
            return answers

    got = asyncio.run(session())
    assert got["worlds"] == ["async"] and got["version"] == 8 and got["edit"].voxels > 0
    np.testing.assert_array_equal(got["helper"].keys, got["mirror"].keys)
    assert got["helper"].version == 8 and [r.world.version for r in got["called"]] == [8]
    assert [f.frame_id for f in got["frames"]] == [1, 2, 3, 4, 5, 6]
    with WorldClient(server.address) as client:  # the same world again, driven by the sync client
        world_id = client.worlds.create(frames, intrinsics).world_id
        expected = [client.step(world_id, pose)[0] for pose in poses] + list(client.step_stream(world_id, poses))
        for a, b in zip(got["frames"], expected):
            np.testing.assert_array_equal(a.rgb, b.rgb)
        # The same chunk of poses: anchors are retrieved per chunk, so a pose's render depends on its chunk.
        np.testing.assert_array_equal(got["renders"][2].depth, client.render(world_id, poses, depth="uint16_mm")[2].depth)
        origins = np.tile([0.0, 0.0, 1.5], (50, 1))
        directions = np.column_stack([np.ones(50), np.linspace(-0.5, 0.5, 50), np.zeros(50)])
        ray = client.queries.raycast(world_id, origins, directions, 5.0)
        np.testing.assert_array_equal(got["ray"].distance_m, ray.distance_m)
        np.testing.assert_array_equal(got["nearest"].points_m, client.queries.nearest_surface(world_id, origins + [2.5, 0, 0], 1.0).points_m)
        np.testing.assert_array_equal(got["spheres"].clearance_m, client.queries.check_spheres(world_id, origins + [2.9, 0, 0], 0.1).clearance_m)
        np.testing.assert_array_equal(got["occupancy"].states, client.queries.occupancy(world_id, origins + [1.0, 0, 0]).states)
        np.testing.assert_array_equal(got["crop"].points_m, client.point_cloud.crop(world_id, [2, -3, 0], [4, 3, 3]).points_m)
        client.edits.recolor_region(world_id, ws.sphere_region([3.0, 0.0, 1.5], 0.3), [9, 9, 9])
        mirror = PointCloudMirror()
        mirror.update(client.point_cloud.stream(world_id))
        np.testing.assert_array_equal(mirror.keys, got["mirror"].keys)
        np.testing.assert_array_equal(mirror.colors, got["mirror"].colors)
        client.worlds.delete(world_id)


def test_following_while_another_task_steps(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)

    async def session() -> list[int]:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.worlds.create(frames, intrinsics)).world_id
            mirror = PointCloudMirror()
            seen: list[int] = []
            caught_up = asyncio.Event()

            async def follow() -> None:
                async for chunk in client.point_cloud.stream(world_id, follow=True, timeout_s=30):
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
            keys = [chunk async for chunk in client.point_cloud.stream(world_id)]
            assert len(mirror) == sum(len(c.keys) for c in keys)
            await client.worlds.delete(world_id)
            return seen

    seen = asyncio.run(session())
    assert seen[0] == 1 and seen[-1] == 4 and seen == sorted(seen)


def test_steps_from_many_tasks_run_one_at_a_time_and_deadlines_drop_the_stream(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)

    async def session() -> list[int]:
        async with await AsyncWorldClient.connect(server.address) as client:
            world_id = (await client.worlds.create(frames, intrinsics)).world_id
            results = await asyncio.gather(*(client.step(world_id, pose) for pose in yaw_poses(6)))
            # 16 poses: far more work than the 1 ms the client raises any deadline to
            with pytest.raises(DeadlineExceededError, match="deadline"):
                await client.step(world_id, yaw_poses(16), timeout_s=1e-4)
            after = await client.step(world_id, yaw_poses(2)[1])  # a fresh stream
            with pytest.raises(NotFoundError, match="no world 'nowhere'"):
                await client.step("nowhere", yaw_poses(2)[1])
            await client.worlds.delete(world_id)
            return sorted(f.frame_id for r in results for f in r) + [after[0].frame_id]

    ids = asyncio.run(session())
    assert ids[:6] == [1, 2, 3, 4, 5, 6] and ids[6] > 6


def test_no_server_is_an_error_that_says_what_to_do():
    with pytest.raises(ServerUnavailableError, match="is `worldweave serve` running"):
        asyncio.run(AsyncWorldClient.connect("127.0.0.1:1", connect_timeout_s=0.5))
