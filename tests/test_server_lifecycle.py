"""A real server on a free loopback port: handshake, health, reflection, and the world lifecycle across a restart."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import NotFoundError, PreconditionError
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.sim_clients.client import WorldClient

WIDTH, HEIGHT = 64, 48


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "worlds"


def start(data_dir) -> BackgroundServer:
    return BackgroundServer(config=ServerConfig(data_dir=data_dir), generator=EchoGenerator())


def test_handshake_health_and_reflection(data_dir):
    with start(data_dir) as server, WorldClient(server.address) as client:
        info = client.info
        assert info.api_version == API_VERSION
        assert set(info.capabilities) == {"lifecycle", "render", "step", "point_cloud_stream", "queries", "edits",
                                          "watch", "rollouts", "lidar", "rigs", "labels", "persistence"}
        assert (info.generator.name, info.generator.max_frames, info.generator.returns_depth) == ("echo", 64, True)
        assert (info.conventions.world_frame, info.conventions.camera_frame, info.conventions.pose) == (
            "right_handed_z_up_metres", "opencv", "camera_to_world")
        assert info.limits.max_message_bytes >= 1920 * 1080 * 5
        assert set(info.image_encodings) == {pb.IMAGE_ENCODING_RAW_RGB8, pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG}

        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "worldweave.v1.WorldService"):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for reply in replies for s in reply.list_services_response.service}
            assert "worldweave.v1.WorldService" in names and "grpc.health.v1.Health" in names


def test_lifecycle_survives_a_restart(data_dir):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    poses = yaw_poses(4)
    with start(data_dir) as server, WorldClient(server.address) as client:
        world = client.worlds.create(frames, intrinsics, world_id="street", prompt="a wall", voxel_size_m=0.05,
                                    retrieval="recent", max_anchors=3)
        assert (world.world_id, world.loaded, world.saved, world.prompt) == ("street", True, False, "a wall")
        assert (world.config.voxel_size_m, world.config.retrieval, world.config.max_anchors) == (0.05, pb.RETRIEVAL_RECENT, 3)
        assert (world.intrinsics.width, world.intrinsics.height) == (WIDTH, HEIGHT)
        other = client.worlds.create(frames, intrinsics)
        assert len(other.world_id) == 12

        client.step("street", poses[:2])
        saved = client.worlds.save("street")
        assert saved.saved and saved.frame_count == client.worlds.get("street").frame_count
        before = client.render("street", poses[2], depth="float16_m")[0]

        assert client.worlds.delete("street").unloaded
        listed = {w.world_id: w for w in client.worlds.list()}
        assert set(listed) == {"street", other.world_id}
        assert listed["street"].saved and not listed["street"].loaded and listed["street"].version == saved.version
        with pytest.raises(PreconditionError, match="saved but not loaded: call LoadWorld"):
            client.worlds.get("street")

    with start(data_dir) as server, WorldClient(server.address) as client:
        listed = {w.world_id: w for w in client.worlds.list()}
        assert set(listed) == {"street"}, "only the saved world is listed after a restart"
        assert listed["street"].version == saved.version and listed["street"].prompt == "a wall"
        loaded = client.worlds.load("street")
        assert loaded.loaded and loaded.version == saved.version and loaded.config.max_anchors == 3
        after = client.render("street", poses[2], depth="float16_m")[0]
        np.testing.assert_array_equal(after.rgb, before.rgb)
        np.testing.assert_array_equal(after.depth, before.depth)
        stepped = client.step("street", poses[3])[0]
        assert stepped.version > saved.version and stepped.frame_id >= saved.frame_count

        removed = client.worlds.delete("street", delete_saved=True)
        assert removed.unloaded and removed.deleted_saved
        assert client.worlds.list() == []
        with pytest.raises(NotFoundError, match="no world 'street'"):
            client.worlds.get("street")
    assert not (data_dir / "street").exists()
