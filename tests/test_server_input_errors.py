"""Issue 17, defects 2-7, each reproduced against a real server on loopback (or the gateway in front of it): far
coordinates are refused instead of wrapping to the origin, bytes that are not protobuf get INVALID_ARGUMENT on every
RPC shape, a PNG whose header claims 20000x20000 is refused before decoding, long world ids are clipped in messages,
leftovers of interrupted saves are removed, and absurd intrinsics, a TLS key of another certificate and a crop box
with min above max are refused up front. After each, the server still serves."""

from __future__ import annotations

import io
import logging
import shutil
import struct
import subprocess
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from worldweave.bridge.eval.wall import wall_seed
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.memory import voxel_keys
from worldweave.bridge.memory.voxel_map import VoxelMap
from worldweave.proto.errors import WorldweaveError
from worldweave.proto.geometry import Intrinsics, Pose, Quaternion
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.cli import main as worldweave_main
from worldweave.sim_clients import conventions as cv
from worldweave.sim_clients import conversions
from worldweave.sim_clients import world_state as ws
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.gateway.engine_client import GatewayClient
from worldweave.sim_clients.gateway.messages import pose_to_wire

WIDTH, HEIGHT = 64, 48
FAR_M = 1e30
EXTENT_M = voxel_keys.extent_m(0.02)
"""The map's extent at the default 2 cm voxels (~20972 m)."""


def assert_serving(client: WorldClient) -> None:
    """The server still answers, and a new world still works end to end."""
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    world_id = client.worlds.create(frames, intrinsics).world_id
    assert len(client.render(world_id, frames[0][2])) == 1
    client.worlds.delete(world_id)


def refused(call, code: str = "INVALID_ARGUMENT", match: str = "") -> WorldweaveError:
    """The error ``call()`` raises, asserted to travel as status ``code`` with a message matching ``match``."""
    with pytest.raises(WorldweaveError, match=match) as caught:
        call()
    assert caught.value.code == code, caught.value
    return caught.value


def shifted(c2w: np.ndarray, x_m: float) -> np.ndarray:
    """The camera-to-world pose ``c2w`` moved ``x_m`` metres along world x."""
    moved = c2w.copy()
    moved[0, 3] += x_m
    return moved


# ------------------------------------------------------------------------------------------------ 2. far coordinates


def test_far_coordinates_are_refused_instead_of_wrapping_to_the_origin(client, world_id):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    rgb, depth, c2w = frames[0]
    before = client.worlds.get(world_id)
    refused(lambda: client.edits.insert_points(world_id, np.array([[FAR_M, 0.0, 0.0]]), np.zeros((1, 3), np.uint8)),
            match=r"points_m\[0\] = \[1\.0\d*e\+30, 0\.0, 0\.0\] lies outside the world's extent")
    refused(lambda: client.worlds.create([(rgb, depth, shifted(c2w, FAR_M))], intrinsics),
            match=r"pose position = \[1e\+30, 0\.0, 1\.5\] lies outside the world's extent")
    refused(lambda: client.step(world_id, shifted(c2w, FAR_M)), match="outside the world's extent")
    refused(lambda: client.edits.remove_region(world_id, ws.box_region([FAR_M, 0, 0], [FAR_M + 1, 1, 1])),
            match=r"region bounds \[1e\+30, 0\.0, 0\.0\]")
    refused(lambda: client.queries.raycast(world_id, np.array([[FAR_M, 0, 0]]), np.array([[1.0, 0, 0]]), 5.0),
            match="outside the world's extent")
    after = client.worlds.get(world_id)
    assert (after.version, after.voxel_count) == (before.version, before.voxel_count)
    near_origin = client.point_cloud.crop(world_id, [-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    assert len(near_origin.points_m) == 0  # nothing wrapped to (0.01, 0.01, 0.01)
    assert_serving(client)


def test_a_seed_reaching_past_the_extent_keeps_only_the_pixels_inside(client):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    rgb, _, c2w = frames[0]
    depth = np.full((HEIGHT, WIDTH), 3.0, np.float32)  # camera 2.5 m from the edge looking out: 0.5 m beyond it
    depth[:, : WIDTH // 2] = 2.0  # left half 0.5 m inside
    world = client.worlds.create([(rgb, depth, shifted(c2w, EXTENT_M - 2.5))], intrinsics)
    cloud = client.point_cloud.crop(world.world_id, [-1e5] * 3, [1e5] * 3)
    assert world.voxel_count == len(cloud.points_m) > 0
    assert cloud.points_m[:, 0].min() > EXTENT_M - 1.0 and cloud.points_m[:, 0].max() <= EXTENT_M
    client.worlds.delete(world.world_id)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_integrate_counts_the_pixels_beyond_the_extent(backend):
    intrinsics = Intrinsics.from_fov(32, 24, fov_x_deg=60.0)
    pose = Pose.look_at((EXTENT_M - 2.5, 0.0, 0.0), (EXTENT_M, 0.0, 0.0))
    depth = np.full((24, 32), 3.0, np.float32)
    depth[:, :16] = 2.0
    voxel_map = VoxelMap(0.02, backend=backend)
    stats = voxel_map.integrate(RGBDFrame(np.full((24, 32, 3), 90, np.uint8), depth, pose, intrinsics), frame_id=0)
    assert (stats.points, stats.points_out_of_range) == (24 * 16, 24 * 16)
    assert voxel_map.points()[0][:, 0].min() > EXTENT_M - 1.0


# ------------------------------------------------------------------------------------------------ 3. undecodable bytes

METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for service in (pb.DESCRIPTOR.services_by_name["WorldService"],)
    for method in service.methods
] + [
    ("/grpc.health.v1.Health/Check", False, False),
    ("/grpc.health.v1.Health/Watch", False, True),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True),
]


def test_bytes_that_are_not_protobuf_get_invalid_argument_on_every_rpc_shape(server, client, caplog):
    garbage = b"not protobuf \xff\xff"
    assert {(streams_in, streams_out) for _, streams_in, streams_out in METHODS} == {
        (False, False), (False, True), (True, True)
    }
    with caplog.at_level(logging.WARNING), grpc.insecure_channel(server.address) as channel:
        for method, streams_in, streams_out in METHODS:
            with pytest.raises(grpc.RpcError) as caught:
                if streams_in:  # Step: a good first message would be answered; the bad one comes first
                    list(channel.stream_stream(method)(iter([garbage]), timeout=10))
                elif streams_out:
                    list(channel.unary_stream(method)(garbage, timeout=10))
                else:
                    channel.unary_unary(method)(garbage, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, caught.value.details())
            assert f"{len(garbage)} bytes" in caught.value.details() and method in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:  # well-formed, but its world_id is not UTF-8
            channel.unary_unary("/worldweave.v1.WorldService/GetWorld")(b"\x0a\x02\xff\xfe", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bad UTF-8" in caught.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert_serving(client)


# ------------------------------------------------------------------------------------------------ 4. decompression bomb


def png_claiming(width: int, height: int) -> bytes:
    """A 4x4 PNG whose header (IHDR, with a valid CRC) says ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = bytearray(data[12:29])  # chunk type and the 13 bytes of IHDR
    header[4:12] = struct.pack(">II", width, height)
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(header)))
    return bytes(data)


def test_a_png_whose_header_claims_20000x20000_is_refused_before_decoding(server, client, gateway):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    seed = conversions.seed_message(frames, intrinsics)
    seed.frames[0].rgb.CopyFrom(pb.Image(width=WIDTH, height=HEIGHT, encoding=pb.IMAGE_ENCODING_PNG,
                                         data=png_claiming(20000, 20000)))
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.WorldServiceStub(channel).CreateWorld(pb.CreateWorldRequest(seed=seed), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seed.frames[0].rgb" in caught.value.details() and "decoding limit" in caught.value.details()

    depth = frames[0][1]
    view = {"rgb": {"width": WIDTH, "height": HEIGHT, "encoding": "png", "data": png_claiming(20000, 20000)},
            "depth": {"width": WIDTH, "height": HEIGHT, "encoding": "float16_m", "data": depth.astype("<f2").tobytes()},
            "pose": pose_to_wire(cv.TransformPose(np.zeros(3), Quaternion(1.0, 0.0, 0.0, 0.0)))}
    camera = {"fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
              "width": intrinsics.width, "height": intrinsics.height}
    with GatewayClient(gateway.address, "canonical") as engine:
        error = refused(lambda: engine.call("create_world", seed={"frames": [view], "intrinsics": camera}),
                        match="decoding limit")
        assert "gateway bug" not in str(error)
        # Declared as big as the header says: refused on the declared size, before Pillow reads the header.
        claimed = {**view, "rgb": {"width": 9500, "height": 9500, "encoding": "png", "data": png_claiming(9500, 9500)}}
        refused(lambda: engine.call("create_world", seed={"frames": [claimed], "intrinsics": camera}),
                match=r"seed.frames\[0\].rgb is 9500x9500, the intrinsics say 64x48")
    assert_serving(client)


# ------------------------------------------------------------------------------------------------ 5. long ids


def test_a_10000_character_world_id_is_clipped_in_every_message(client):
    long_id = "w" * 10_000
    poses = wall_seed(WIDTH, HEIGHT)[0][0][2]
    calls = {
        "GetWorld": lambda: client.worlds.get(long_id),
        "Render": lambda: client.render(long_id, poses),
        "Step": lambda: client.step(long_id, poses),
        "DeleteWorld": lambda: client.worlds.delete(long_id),
        "Raycast": lambda: client.queries.raycast(long_id, np.zeros((1, 3)), np.ones((1, 3)), 1.0),
        "StreamPointCloud": lambda: list(client.point_cloud.stream(long_id)),
    }
    for name, call in calls.items():
        error = refused(call, match=r"world_id 'w{64}'… \(10000 chars\) must be 1\.\.64 characters")
        assert len(str(error)) < 300, (name, len(str(error)))
    assert_serving(client)


# ------------------------------------------------------------------------------------------------ 6. interrupted saves


def test_leftovers_of_interrupted_saves_are_removed_by_the_next_save_and_at_start_up(tmp_path):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    config = ServerConfig(data_dir=tmp_path)
    with BackgroundServer(config=config, generator=EchoGenerator()) as server, WorldClient(server.address) as client:
        for world_id in ("kept", "other"):
            client.worlds.create(frames, intrinsics, world_id=world_id)
            client.worlds.save(world_id)
        # What a kill -9 in the middle of a save leaves: the half-written copy beside the last complete save.
        for stale in (".kept.tmp-0badc0de", ".kept.tmp-1badc0de", ".other.tmp-2badc0de"):
            shutil.copytree(tmp_path / stale.split(".")[1], tmp_path / stale)
        client.worlds.save("kept")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-2badc0de", "kept", "other"]
    with BackgroundServer(config=config, generator=EchoGenerator()) as server, WorldClient(server.address) as client:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "other"]
        assert sorted(w.world_id for w in client.worlds.list()) == ["kept", "other"]
        assert client.worlds.load("other").voxel_count > 0
        assert_serving(client)


# ------------------------------------------------------------------------------------------------ 7. smaller ones


def test_absurd_intrinsics_are_refused_up_front(client, world_id):
    frames, _ = wall_seed(WIDTH, HEIGHT)
    tiny_focal = pb.Intrinsics(fx=1e-300, fy=1e-300, cx=31.5, cy=23.5, width=WIDTH, height=HEIGHT)
    refused(lambda: client.render(world_id, frames[0][2], intrinsics=tiny_focal, depth="float16_m"),
            match=r"intrinsics fx = 1e-300 px is outside 0\.064\.\.1e\+07 px for an image 64 px across")
    refused(lambda: client.step(world_id, frames[0][2], intrinsics=tiny_focal), match="fx = 1e-300")
    refused(lambda: client.worlds.create(frames, tiny_focal), match=r"seed\.intrinsics: intrinsics fx = 1e-300")
    far_centre = pb.Intrinsics(fx=50, fy=50, cx=1e9, cy=23.5, width=WIDTH, height=HEIGHT)
    refused(lambda: client.render(world_id, frames[0][2], intrinsics=far_centre), match=r"cx = 1000000000\.0 px")
    # Near the limits a camera stays valid at the coarse grid retrieval scales it to: accepted means usable.
    edge = Intrinsics(0.0011 * 640, 0.0011 * 480, -640.0, 2 * 480 - 1.0, 640, 480)
    assert edge.scaled(32, 24).cy == pytest.approx((959.5 / 20) - 0.5)
    assert_serving(client)


def test_a_tls_key_of_another_certificate_exits_2_naming_both_files(tmp_path, caplog):
    for name in ("a", "b"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", tmp_path / f"{name}.key", "-out", tmp_path / f"{name}.crt", "-days", "1", "-subj", "/CN=localhost"],
            check=True, capture_output=True,
        )
    cert, key = tmp_path / "a.crt", tmp_path / "b.key"
    with caplog.at_level(logging.ERROR):
        code = worldweave_main(["serve", "--port", "0", "--no-malloc-tuning", "--tls-cert", str(cert), "--tls-key", str(key)])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"the TLS private key {key} does not match the certificate {cert}"]


def test_the_gateway_refuses_a_crop_box_with_min_above_max_like_grpc(client, gateway, world_id):
    direct = refused(lambda: client.point_cloud.crop(world_id, [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]), match="exceeds max")
    with GatewayClient(gateway.address, "unity") as engine:
        refused(lambda: engine.stream("crop_point_cloud", world_id=world_id, box={"min": [1.0, 0.0, 0.0], "max": [0.0, 1.0, 1.0]}),
                code=direct.code, match=r"crop_point_cloud.box: min \[1\.0, 0\.0, 0\.0\] exceeds max \[0\.0, 1\.0, 1\.0\]")
        chunks = engine.stream("crop_point_cloud", world_id=world_id, box={"min": [-10, -10, -10], "max": [10, 10, 10]})
        assert sum(chunk["count"] for chunk in chunks) > 0
    assert_serving(client)
