"""Wire codecs without a network: the SDK's proto<->numpy conversions and the server's proto<->engine codecs agree,
round-trip, and reject bad input with errors that name the bad value."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from worldweave.proto import codecs as wire
from worldweave.proto.errors import (
    InvalidFrameError,
    InvalidInputError,
    InvalidIntrinsicsError,
    InvalidPoseError,
    LimitExceededError,
    WireFormatError,
)
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server import codecs
from worldweave.sim_clients import conversions

RNG = np.random.default_rng(7)


def random_rgb(h: int = 12, w: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def random_pose() -> Pose:
    q = RNG.normal(size=4)
    from worldweave.proto.geometry import Quaternion

    return Pose.from_position_quaternion(RNG.normal(size=3) * 5, Quaternion(*q))


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("encoding", [pb.IMAGE_ENCODING_RAW_RGB8, pb.IMAGE_ENCODING_PNG])
def test_lossless_images_round_trip(encoding):
    rgb = random_rgb()
    message = wire.encode_image(rgb, encoding)
    assert (message.width, message.height, message.encoding) == (17, 12, encoding)
    np.testing.assert_array_equal(wire.decode_image(message), rgb)


def test_jpeg_round_trip_is_close():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 40, 10)
    rgb[:, 24:] = (10, 120, 220)
    decoded = wire.decode_image(wire.encode_image(rgb, pb.IMAGE_ENCODING_JPEG, jpeg_quality=95))
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 4


def test_raw_image_with_wrong_byte_count_names_sizes():
    message = pb.Image(width=4, height=3, encoding=pb.IMAGE_ENCODING_RAW_RGB8, data=b"\0" * 35)
    with pytest.raises(WireFormatError, match=r"seed rgb: raw RGB8 4x3 needs 36 bytes, got 35"):
        wire.decode_image(message, "seed rgb")


def test_png_whose_size_differs_from_the_message_is_rejected_before_decoding():
    message = wire.encode_image(random_rgb(8, 8), pb.IMAGE_ENCODING_PNG)
    message.width = 4000
    with pytest.raises(WireFormatError, match=r"the PNG is 8x8, the message says 4000x8"):
        wire.decode_image(message)


def test_png_with_alpha_is_rejected():
    buffer = io.BytesIO()
    PILImage.fromarray(np.zeros((4, 4, 4), np.uint8), mode="RGBA").save(buffer, format="PNG")
    message = pb.Image(width=4, height=4, encoding=pb.IMAGE_ENCODING_PNG, data=buffer.getvalue())
    with pytest.raises(WireFormatError, match="mode 'RGBA'"):
        wire.decode_image(message)


def test_garbage_and_unknown_encodings_are_rejected():
    with pytest.raises(WireFormatError, match="not a readable JPEG"):
        wire.decode_image(pb.Image(width=2, height=2, encoding=pb.IMAGE_ENCODING_JPEG, data=b"nope"))
    with pytest.raises(WireFormatError, match="unknown image encoding 9"):
        wire.decode_image(pb.Image(width=2, height=2, encoding=9, data=b""))
    with pytest.raises(WireFormatError, match="positive size"):
        wire.decode_image(pb.Image(width=0, height=2, encoding=pb.IMAGE_ENCODING_RAW_RGB8))
    with pytest.raises(WireFormatError, match="uint8"):
        wire.encode_image(np.zeros((2, 2, 3), np.float32))


# ------------------------------------------------------------------------------------------------ depth and masks


def test_depth_float16_round_trip_within_float16_precision():
    depth = RNG.uniform(0.1, 40.0, size=(9, 11)).astype(np.float32)
    depth[0, 0] = 0.0
    decoded = wire.decode_depth(wire.encode_depth(depth, pb.DEPTH_ENCODING_FLOAT16_M))
    assert decoded.dtype == np.float32 and decoded[0, 0] == 0.0
    np.testing.assert_allclose(decoded, depth, rtol=1.0 / 1024)


def test_depth_uint16_millimetres_round_trip_and_saturate():
    depth = np.array([[0.0, 1.2344, 65.535], [70.0, 0.0005, 3.0]], np.float32)
    decoded = wire.decode_depth(wire.encode_depth(depth, pb.DEPTH_ENCODING_UINT16_MM))
    np.testing.assert_allclose(decoded, [[0.0, 1.234, 65.535], [65.535, 0.0, 3.0]], atol=1e-6)


def test_depth_encoding_rejects_invalid_values_and_lengths():
    depth = np.ones((3, 3), np.float32)
    depth[1, 2] = np.nan
    with pytest.raises(WireFormatError, match=r"invalid value nan at pixel \(u=2, v=1\)"):
        wire.encode_depth(depth, pb.DEPTH_ENCODING_FLOAT16_M)
    message = pb.DepthImage(width=3, height=3, encoding=pb.DEPTH_ENCODING_UINT16_MM, data=b"\0" * 17)
    with pytest.raises(WireFormatError, match="needs 18 bytes, got 17"):
        wire.decode_depth(message)
    with pytest.raises(WireFormatError, match="unknown depth encoding 0"):
        wire.decode_depth(pb.DepthImage(width=3, height=3, data=b"\0" * 18))


def test_masks_round_trip_with_a_pixel_count_not_a_multiple_of_8():
    mask = RNG.random((5, 7)) > 0.5
    message = wire.encode_mask(mask)
    assert len(message.packed_bits) == 5
    np.testing.assert_array_equal(wire.decode_mask(message), mask)
    message.packed_bits = message.packed_bits[:-1]
    with pytest.raises(WireFormatError, match="need 5 bytes, got 4"):
        wire.decode_mask(message)


# ------------------------------------------------------------------------------------------------ poses


def test_client_matrix_poses_reach_the_engine_exactly():
    pose = random_pose()
    message = wire.pose_message(pose.matrix)
    assert message.WhichOneof("form") == "matrix"
    np.testing.assert_allclose(codecs.pose_from_proto(message).matrix, pose.matrix, atol=1e-12)


def test_engine_poses_reach_the_client_as_named_quaternions():
    pose = random_pose()
    message = codecs.pose_to_proto(pose)
    assert message.WhichOneof("form") == "position_quaternion"
    q = message.position_quaternion.rotation
    assert (q.qw, q.qx, q.qy, q.qz) == tuple(pose.quaternion)
    np.testing.assert_allclose(wire.pose_matrix(message), pose.matrix, atol=1e-12)
    np.testing.assert_allclose(codecs.pose_from_proto(message).matrix, pose.matrix, atol=1e-12)


def test_bad_poses_are_named():
    nan = np.eye(4)
    nan[1, 3] = np.nan
    with pytest.raises(InvalidPoseError, match=r"poses\[1\]: .*non-finite value nan"):
        codecs.poses_from_proto([wire.pose_message(np.eye(4)), wire.pose_message(nan)], 8)
    skew = np.eye(4)
    skew[0, 1] = 0.3
    with pytest.raises(InvalidPoseError, match=r"poses\[0\]: rotation is not orthonormal"):
        codecs.poses_from_proto([wire.pose_message(skew)], 8)
    with pytest.raises(InvalidPoseError, match=r"pose: a matrix pose needs 16 values .* got 15"):
        codecs.pose_from_proto(pb.Pose(matrix=pb.Matrix4x4(values=[0.0] * 15)))
    with pytest.raises(InvalidPoseError, match="pose is empty"):
        codecs.pose_from_proto(pb.Pose())
    zero_q = pb.Pose(position_quaternion=pb.PositionQuaternion(rotation=pb.Quaternion()))
    with pytest.raises(InvalidPoseError, match="zero length"):
        codecs.pose_from_proto(zero_q)


def test_pose_count_limits():
    with pytest.raises(InvalidInputError, match="poses is empty"):
        codecs.poses_from_proto([], 4)
    with pytest.raises(LimitExceededError, match="5 poses in one call; this server takes at most max_poses_per_call = 4"):
        codecs.poses_from_proto([wire.pose_message(np.eye(4))] * 5, 4)


def test_client_pose_stacks():
    assert len(conversions.pose_messages(np.eye(4))) == 1
    assert len(conversions.pose_messages(np.stack([np.eye(4)] * 3))) == 3
    with pytest.raises(WireFormatError, match=r"\(N, 4, 4\) stack, got shape \(3, 3\)"):
        conversions.pose_messages(np.eye(3))


# ------------------------------------------------------------------------------------------------ intrinsics


def test_intrinsics_round_trip_both_sides():
    camera = Intrinsics.from_fov(640, 480, fov_y_deg=60.0)
    assert wire.decode_intrinsics(wire.intrinsics_message(camera)) == Intrinsics.from_fov(640, 480, fov_y_deg=60.0)


def test_bad_intrinsics_are_named():
    with pytest.raises(InvalidIntrinsicsError, match="intrinsics: focal lengths must be positive, got fx=-1.0"):
        wire.decode_intrinsics(pb.Intrinsics(fx=-1, fy=1, width=4, height=4))
    with pytest.raises(InvalidIntrinsicsError, match="width must be a positive integer, got 0"):
        wire.decode_intrinsics(pb.Intrinsics(fx=1, fy=1, width=0, height=4))


# ------------------------------------------------------------------------------------------------ frames


def test_frame_format_defaults_and_validation():
    fmt = codecs.frame_format_from_proto(pb.FrameFormat())
    assert fmt == codecs.FrameFormat(pb.IMAGE_ENCODING_RAW_RGB8, 90, None, False)
    with pytest.raises(InvalidInputError, match="format.image_encoding 7 is not an ImageEncoding"):
        codecs.frame_format_from_proto(pb.FrameFormat(image_encoding=7))
    with pytest.raises(InvalidInputError, match="format.depth_encoding 5 is not a DepthEncoding"):
        codecs.frame_format_from_proto(pb.FrameFormat(depth_encoding=5))
    with pytest.raises(InvalidInputError, match="jpeg_quality must be in 1..100 .* got 101"):
        codecs.frame_format_from_proto(pb.FrameFormat(jpeg_quality=101))
    with pytest.raises(WireFormatError, match="unknown image encoding 'webp'"):
        conversions.frame_format("webp")


def test_frames_round_trip_from_engine_to_client():
    rgb, depth, mask = random_rgb(), RNG.uniform(0, 9, (12, 17)).astype(np.float32), RNG.random((12, 17)) > 0.3
    pose = random_pose()
    fmt = codecs.frame_format_from_proto(conversions.frame_format("png", "uint16_mm", coverage_mask=True))
    message = codecs.frame_to_proto(fmt, pb.Frame(), rgb=rgb, depth_m=depth, pose=pose, version=7, coverage=0.25, frame_id=3,
                                    coverage_mask=mask)
    frame = conversions.decode_frame(message)
    np.testing.assert_array_equal(frame.rgb, rgb)
    np.testing.assert_allclose(frame.depth, depth, atol=5e-4)
    np.testing.assert_array_equal(frame.coverage_mask, mask)
    np.testing.assert_allclose(frame.pose, pose.matrix, atol=1e-12)
    assert (frame.version, frame.coverage, frame.frame_id) == (7, 0.25, 3)
    bare = conversions.decode_frame(codecs.frame_to_proto(codecs.frame_format_from_proto(pb.FrameFormat()), pb.Frame(), rgb=rgb,
                                                          depth_m=depth, pose=pose, version=0, coverage=1.0))
    assert bare.depth is None and bare.frame_id is None and bare.coverage_mask is None


# ------------------------------------------------------------------------------------------------ requests


def seed_triples(n: int = 2, h: int = 12, w: int = 17):
    return [(random_rgb(h, w), RNG.uniform(0.5, 5, (h, w)).astype(np.float32), random_pose().matrix) for _ in range(n)]


def test_seed_round_trip():
    triples = seed_triples()
    camera = Intrinsics(20.0, 20.0, 8.0, 5.5, 17, 12)
    seed = conversions.seed_message(triples, camera, "a street")
    frames, intrinsics, prompt = codecs.seed_from_proto(seed, max_frames=4, max_width=64, max_height=64)
    assert prompt == "a street" and intrinsics.shape == (12, 17) and len(frames) == 2
    for frame, (rgb, depth, c2w) in zip(frames, triples):
        np.testing.assert_array_equal(frame.rgb, rgb)
        np.testing.assert_allclose(frame.depth, depth, atol=5e-4)
        np.testing.assert_allclose(frame.pose.matrix, c2w, atol=1e-12)


def test_bad_seeds_are_named():
    camera = Intrinsics(20.0, 20.0, 8.0, 5.5, 17, 12)
    seed = conversions.seed_message(seed_triples(), camera)
    with pytest.raises(LimitExceededError, match="2 seed frames; this server takes at most max_seed_frames = 1"):
        codecs.seed_from_proto(seed, max_frames=1, max_width=64, max_height=64)
    with pytest.raises(LimitExceededError, match="seed image size is 17x12; this server takes at most max_width x max_height = 16x16"):
        codecs.seed_from_proto(seed, max_frames=4, max_width=16, max_height=16)
    wrong = conversions.seed_message(seed_triples(1, 10, 17), camera)
    wrong.frames[0].depth.CopyFrom(wire.encode_depth(np.ones((12, 17), np.float32), pb.DEPTH_ENCODING_FLOAT16_M))
    with pytest.raises(InvalidFrameError, match=r"seed.frames\[0\].rgb is 17x10, the intrinsics say 17x12"):
        codecs.seed_from_proto(wrong, max_frames=4, max_width=64, max_height=64)
    no_depth = conversions.seed_message(seed_triples(1), camera)
    no_depth.frames[0].ClearField("depth")
    with pytest.raises(InvalidFrameError, match=r"seed.frames\[0\].depth is not set"):
        codecs.seed_from_proto(no_depth, max_frames=4, max_width=64, max_height=64)
    negative = conversions.seed_message(seed_triples(1), camera)
    negative.frames[0].depth.data = np.full((12, 17), -1.0, "<f2").tobytes()
    negative.frames[0].depth.encoding = pb.DEPTH_ENCODING_FLOAT16_M
    with pytest.raises(InvalidFrameError, match=r"seed.frames\[0\]: depth has an invalid value -1.0"):
        codecs.seed_from_proto(negative, max_frames=4, max_width=64, max_height=64)
    with pytest.raises(InvalidIntrinsicsError, match="seed.intrinsics is not set"):
        codecs.seed_from_proto(pb.Seed(), max_frames=4, max_width=64, max_height=64)


def test_step_request_masks_and_boxes_reach_the_engine():
    mask = RNG.random((12, 17)) > 0.5
    rotation = random_pose().rotation
    fmt = conversions.frame_format()
    request = conversions.step_request(
        "w", np.stack([np.eye(4)] * 3), fmt, dynamic_masks=[None, mask, None],
        dynamic_boxes=[((1, 2, 3), (0.5, 0.5, 1.0), rotation)], prompt="rain", seed=5,
    )
    intrinsics = Intrinsics(20.0, 20.0, 8.0, 5.5, 17, 12)
    masks = codecs.dynamic_masks_from_proto(request.dynamic_masks, 3, intrinsics)
    assert masks[0] is None and masks[2] is None
    np.testing.assert_array_equal(masks[1], mask)
    box = codecs.oriented_box_from_proto(request.dynamic_boxes[0])
    np.testing.assert_allclose(box.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(box.center_m, (1, 2, 3))
    assert request.prompt == "rain" and request.seed == 5
    assert codecs.dynamic_masks_from_proto([], 3, intrinsics) is None
    request.dynamic_masks[0].pose_index = 3
    with pytest.raises(InvalidInputError, match=r"dynamic_masks\[0\].pose_index 3 is out of range for 3 pose"):
        codecs.dynamic_masks_from_proto(request.dynamic_masks, 3, intrinsics)
    with pytest.raises(WireFormatError, match="2 dynamic masks for 3 poses"):
        conversions.step_request("w", np.stack([np.eye(4)] * 3), fmt, dynamic_masks=[None, mask])


def test_world_config():
    config = conversions.world_config(voxel_size_m=0.05, retrieval="iou", max_anchors=3, seed=1)
    assert (config.voxel_size_m, config.retrieval, config.max_anchors, config.seed) == (0.05, pb.RETRIEVAL_IOU, 3, 1)
    assert not conversions.world_config().HasField("voxel_size_m")
    with pytest.raises(WireFormatError, match="unknown retrieval 'best'"):
        conversions.world_config(retrieval="best")
