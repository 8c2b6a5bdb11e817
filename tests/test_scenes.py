"""The ground-truth renderer against analytic cases: planes at known depths, a box face's colour, the sky."""

import math

import numpy as np
import pytest

from worldweave.bridge.eval.scenes import (
    LIGHT_DIRECTION,
    SKY_RGB,
    Block,
    Material,
    MeshBuilder,
    Scene,
    heading_pose,
    make_scene,
)
from worldweave.proto.errors import NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

PLAIN = Material("plain", (200, 100, 50), variation=0.0, grain=0.0)
FREE = ((np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])),)


def _scene(builder: MeshBuilder) -> Scene:
    return Scene("test", builder, free_space=FREE, start_position_m=np.zeros(3), start_heading_rad=0.0)


def _lit(color, normal) -> np.ndarray:
    light = 0.7 + 0.3 * max(0.0, float(np.dot(normal, LIGHT_DIRECTION)))
    return np.clip(np.rint(np.asarray(color, float) * light), 0, 255).astype(np.uint8)


def test_a_plane_facing_the_camera_has_constant_depth_and_colour():
    # A wall at x = 3 m facing -x, seen from the origin looking along +x: depth along the optical axis is 3 everywhere.
    builder = MeshBuilder()
    builder.quad(np.array([3.0, 20.0, -20.0]), np.array([0.0, -40.0, 0.0]), np.array([0.0, 0.0, 40.0]), PLAIN)
    intrinsics = Intrinsics(50.0, 50.0, 15.5, 11.5, 32, 24)
    frame = _scene(builder).render(heading_pose(np.zeros(3), 0.0), intrinsics)
    np.testing.assert_allclose(frame.depth, 3.0, rtol=1e-6)
    assert np.all(frame.rgb == _lit(PLAIN.color_a, [-1.0, 0.0, 0.0]))


def test_a_floor_seen_level_follows_integer_pixel_centres():
    # Camera 1.5 m above the floor z = 0, looking level along +x: pixel row v (centre at integer v) sees the floor at
    # depth 1.5 fy / (v - cy) for v > cy, and the sky above the horizon. cy = 10 puts the horizon on row 10 exactly.
    builder = MeshBuilder()
    builder.quad(np.array([-100.0, -100.0, 0.0]), np.array([200.0, 0.0, 0.0]), np.array([0.0, 200.0, 0.0]), PLAIN)
    intrinsics = Intrinsics(40.0, 40.0, 15.0, 10.0, 31, 24)
    frame = _scene(builder).render(heading_pose(np.array([0.0, 0.0, 1.5]), 0.0), intrinsics)
    rows = np.arange(11, 24)
    expected = 1.5 * intrinsics.fy / (rows - intrinsics.cy)
    np.testing.assert_allclose(frame.depth[11:, :], np.repeat(expected[:, None], 31, axis=1), rtol=1e-5)
    assert np.all(frame.depth[:11] == 0.0)
    assert np.all(frame.rgb[:11] == SKY_RGB)
    assert np.all(frame.rgb[11:] == _lit(PLAIN.color_a, [0.0, 0.0, 1.0]))


def test_a_box_face_has_its_material_colour_at_the_hit_point():
    checker = Material("checker", (250, 250, 250), (10, 10, 10), scale_m=0.5, variation=0.0, grain=0.0)
    builder = MeshBuilder()
    builder.block(Block((4.0, 0.0, 0.0), (2.0, 2.0, 2.0), checker))  # front face at x = 3 faces -x
    intrinsics = Intrinsics(60.0, 60.0, 20.0, 15.0, 41, 31)
    scene = _scene(builder)
    frame = scene.render(heading_pose(np.zeros(3), 0.0), intrinsics)
    # The centre pixel (20, 15) looks straight along +x and hits (3, 0, 0); a pixel at (u, v) hits y = -(u - cx)/fx * 3 and
    # z = -(v - cy)/fy * 3 (OpenCV: x right, y down; the camera looks along +x with world +y to its left).
    normal = np.array([-1.0, 0.0, 0.0])
    for u, v in [(22, 13), (31, 13), (22, 27), (5, 3)]:  # away from the checker's edges
        y, z = -(u - 20.0) / 60.0 * 3.0, -(v - 15.0) / 60.0 * 3.0
        assert frame.depth[v, u] == pytest.approx(3.0, rel=1e-6)
        # The -x face's texture axes: s along -y (horizontal), t along +z.
        mix = (math.floor(-y / 0.5) + math.floor(z / 0.5)) % 2
        expected = _lit((10, 10, 10) if mix else (250, 250, 250), normal)
        assert np.array_equal(frame.rgb[v, u], expected), (u, v)
    # Colour is a function of the world point: another view of the same point gets the same colour.
    point = np.array([3.0, -0.3, 0.2])
    side = scene.render(Pose.look_at([1.0, 1.5, 0.5], point), intrinsics)
    assert np.array_equal(side.rgb[15, 20], scene.colors_at(point[None], np.array([4]))[0])


def test_scenes_are_seeded_and_have_free_space():
    intrinsics = Intrinsics.from_fov(48, 36, fov_x_deg=70)
    for name in ("room", "street"):
        a, b, c = make_scene(name, 0), make_scene(name, 0), make_scene(name, 1)
        pose = a.start_pose(pitch_deg=10)
        frame_a, frame_b, frame_c = a.render(pose, intrinsics), b.render(pose, intrinsics), c.render(pose, intrinsics)
        assert np.array_equal(frame_a.rgb, frame_b.rgb) and np.array_equal(frame_a.depth, frame_b.depth)
        assert not np.array_equal(frame_a.rgb, frame_c.rgb)
        assert a.is_free(a.start_position_m[None])[0]
        assert (frame_a.depth > 0).mean() > 0.5
        assert frame_a.rgb.std() > 10  # textured, not flat
    room = make_scene("room", 0)
    assert not room.is_free(np.array([[0.0, 0.0, 0.1], [3.4, 0.0, 1.5]])).any()
    with pytest.raises(NotFoundError, match="room"):
        make_scene("castle")
