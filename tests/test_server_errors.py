"""Every bad input gets its own status with a message naming the bad value, and the server keeps serving."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto import codecs
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.service import ServerLimits
from worldweave.sim_clients import conversions
from worldweave.sim_clients.client import WorldClient

WIDTH, HEIGHT = 64, 48
INVALID, NOT_FOUND, EXHAUSTED, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(limits=ServerLimits(max_poses_per_call=8, max_message_bytes=32 << 20))
    with BackgroundServer(config=config, generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 128 << 20)]) as channel:
        yield pb_grpc.WorldServiceStub(channel)


@pytest.fixture(scope="module")
def world_id(server):
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    with WorldClient(server.address) as client:
        return client.worlds.create(frames, intrinsics, world_id="errors").world_id


def pose(matrix: np.ndarray) -> pb.Pose:
    return codecs.pose_message(matrix)


def nan_pose() -> np.ndarray:
    matrix = yaw_poses(1)[0]
    matrix[0, 3] = np.nan
    return matrix


def skewed_pose() -> np.ndarray:
    matrix = yaw_poses(1)[0]
    matrix[:3, 0] *= 1.5
    return matrix


def seed(width: int = WIDTH, height: int = HEIGHT) -> pb.Seed:
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    message = conversions.seed_message(frames, intrinsics)
    message.intrinsics.width, message.intrinsics.height = width, height
    return message


def render(world_id: str, poses: list[pb.Pose], **fields) -> pb.RenderRequest:
    return pb.RenderRequest(world_id=world_id, poses=poses, **fields)


def step(world_id: str, poses: list[pb.Pose], **fields) -> pb.StepRequest:
    return pb.StepRequest(world_id=world_id, poses=poses, **fields)


BAD_UNARY = {
    "nan pose": ("Render", lambda w: render(w, [pose(np.eye(4)), pose(nan_pose())]), INVALID, r"poses\[1\]: .*non-finite value nan"),
    "skewed pose": ("Render", lambda w: render(w, [pose(skewed_pose())]), INVALID, r"poses\[0\]: rotation is not orthonormal"),
    "empty pose": ("Render", lambda w: render(w, [pb.Pose()]), INVALID, r"poses\[0\] is empty"),
    "no poses": ("Render", lambda w: render(w, []), INVALID, "poses is empty"),
    "too many poses": ("Render", lambda w: render(w, [pose(np.eye(4))] * 9), EXHAUSTED, "9 poses in one call; this server takes at most max_poses_per_call = 8"),
    "bad intrinsics": ("Render", lambda w: render(w, [pose(np.eye(4))], intrinsics=pb.Intrinsics(fx=0, fy=50, width=64, height=48)),
                       INVALID, r"intrinsics: focal lengths must be positive, got fx=0.0"),
    "huge image": ("Render", lambda w: render(w, [pose(np.eye(4))], intrinsics=pb.Intrinsics(fx=9, fy=9, width=4000, height=3000)),
                   EXHAUSTED, "4000x3000; this server takes at most max_width x max_height = 1920x1080"),
    "over the message limit": ("Render", lambda w: render(w, [pose(np.eye(4))] * 8, format=pb.FrameFormat(depth_encoding=1),
                                                          intrinsics=pb.Intrinsics(fx=900, fy=900, width=1920, height=1080)),
                               EXHAUSTED, r"8 frame\(s\) of 1920x1080 need about .* MiB, over the 32 MiB message limit"),
    "bad encoding": ("Render", lambda w: render(w, [pose(np.eye(4))], format=pb.FrameFormat(image_encoding=9)),
                     INVALID, "format.image_encoding 9 is not an ImageEncoding"),
    "bad depth encoding": ("Render", lambda w: render(w, [pose(np.eye(4))], format=pb.FrameFormat(depth_encoding=4)),
                           INVALID, "format.depth_encoding 4 is not a DepthEncoding"),
    "unknown world": ("Render", lambda w: render("nowhere", [pose(np.eye(4))]), NOT_FOUND, "no world 'nowhere'"),
    "bad world id": ("GetWorld", lambda w: pb.GetWorldRequest(world_id="../etc"), INVALID, r"world_id '../etc' must be 1..64 characters"),
    "existing world": ("CreateWorld", lambda w: pb.CreateWorldRequest(world_id=w, seed=seed()), grpc.StatusCode.ALREADY_EXISTS,
                       "world 'errors' already exists"),
    "wrong image size": ("CreateWorld", lambda w: pb.CreateWorldRequest(seed=seed(height=40)), INVALID,
                         r"seed.frames\[0\].rgb is 64x48, the intrinsics say 64x40"),
    "bad retrieval": ("CreateWorld", lambda w: pb.CreateWorldRequest(seed=seed(), config=pb.WorldConfig(retrieval=17)), INVALID,
                      "config.retrieval 17 is not a Retrieval value"),
    "zero anchors": ("CreateWorld", lambda w: pb.CreateWorldRequest(seed=seed(), config=pb.WorldConfig(max_anchors=0)), INVALID,
                     r"config \(max_anchors is the engine's k\): k must be a positive integer, got 0"),
    "tiny voxels": ("CreateWorld", lambda w: pb.CreateWorldRequest(seed=seed(), config=pb.WorldConfig(voxel_size_m=0.0001)), INVALID,
                    "voxel_size_m must be >= 0.005 m, got 0.0001"),
    "save without data folder": ("SaveWorld", lambda w: pb.SaveWorldRequest(world_id=w), PRECONDITION,
                                 "no data folder: start it with `worldweave serve --data-dir DIR`"),
}


def assert_still_serving(stub, world_id: str) -> None:
    frames = list(stub.Step(iter([step(world_id, [pose(yaw_poses(1)[0])])]), timeout=10))
    assert len(frames) == 1 and frames[0].frame.rgb.width == WIDTH


@pytest.mark.parametrize("case", sorted(BAD_UNARY))
def test_bad_unary_requests_get_their_status(stub, world_id, case):
    rpc, make, code, message = BAD_UNARY[case]
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(make(world_id), timeout=10)
    assert caught.value.code() == code, caught.value.details()
    assert re.search(message, caught.value.details()), caught.value.details()
    assert_still_serving(stub, world_id)


BAD_STEPS = {
    "nan pose": (lambda w: step(w, [pose(nan_pose())]), INVALID, r"poses\[0\]: .*non-finite"),
    "mask of the wrong size": (
        lambda w: step(w, [pose(np.eye(4))], dynamic_masks=[pb.DynamicMask(pose_index=0, mask=codecs.encode_mask(np.zeros((4, 4), bool)))]),
        INVALID, r"dynamic_masks\[0\].mask is 4x4, the intrinsics say 64x48"),
    "mask for a missing pose": (
        lambda w: step(w, [pose(np.eye(4))], dynamic_masks=[pb.DynamicMask(pose_index=2, mask=codecs.encode_mask(np.zeros((48, 64), bool)))]),
        INVALID, r"pose_index 2 is out of range for 1 pose"),
    "bad dynamic box": (
        lambda w: step(w, [pose(np.eye(4))], dynamic_boxes=[pb.OrientedBox(half_extents_m=pb.Vec3(x=-1), rotation=pb.Quaternion(qw=1))]),
        INVALID, r"dynamic_boxes\[0\]: oriented box half extents must be >= 0"),
    "unknown world": (lambda w: step("gone", [pose(np.eye(4))]), NOT_FOUND, "no world 'gone'"),
}


@pytest.mark.parametrize("case", sorted(BAD_STEPS))
def test_a_bad_step_ends_its_stream_after_the_good_ones(stub, world_id, case):
    make, code, message = BAD_STEPS[case]
    good = step(world_id, [pose(yaw_poses(1)[0])])
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in stub.Step(iter([good, make(world_id), good]), timeout=10):
            received.append(response)
    assert caught.value.code() == code, caught.value.details()
    assert re.search(message, caught.value.details()), caught.value.details()
    assert len(received) == 1, "frames of the requests before the bad one arrive; none after"
    assert_still_serving(stub, world_id)
