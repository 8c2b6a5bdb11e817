"""Trajectory loaders on small hand-written files, the placement rule, and the procedural trajectories."""

import math

import numpy as np
import pytest

from worldweave.bridge.eval import metrics
from worldweave.bridge.eval.scenes import make_scene
from worldweave.bridge.eval.trajectories import (
    Trajectory,
    fit_into_scene,
    load_kitti,
    load_realestate10k,
    load_tum,
    make_trajectory,
    path_length_m,
)
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Pose


@pytest.fixture(scope="module")
def street():
    return make_scene("street", 0)


def test_load_tum(tmp_path):
    # Second line: a 90 degree turn about z, quaternion given as qx qy qz qw (TUM's order) and not quite unit length.
    s = math.sqrt(0.5)
    path = tmp_path / "gt.txt"
    path.write_text(f"# timestamp tx ty tz qx qy qz qw\n1.0 1 2 3 0 0 0 1\n1.1 1.5 2 3 0 0 {s:.6f} {s * 1.00005:.6f}\n")
    trajectory = load_tum(path)
    assert len(trajectory) == 2 and trajectory.name == "gt"
    np.testing.assert_allclose(trajectory.poses[0].matrix, np.array([[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1.0]]))
    np.testing.assert_allclose(trajectory.poses[1].rotation, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-4)
    path.write_text("1.0 1 2 3 0 0 0\n")
    with pytest.raises(InvalidInputError, match="expected 8 values"):
        load_tum(path)
    with pytest.raises(NotFoundError):
        load_tum(tmp_path / "missing.txt")


def test_load_kitti(tmp_path):
    path = tmp_path / "00.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0.1 0 1 0 0.2 0 0 1 1.5\n")
    trajectory = load_kitti(path)
    np.testing.assert_allclose(trajectory.poses[1].position, [0.1, 0.2, 1.5])


def test_load_realestate10k_inverts_world_to_camera(tmp_path):
    # World-to-camera: a camera rotated 90 degrees about y whose centre is at (2, 0, 0).
    rotation_c2w = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    centre = np.array([2.0, 0.0, 0.0])
    rotation_w2c = rotation_c2w.T
    t_w2c = -rotation_w2c @ centre
    w2c = np.hstack([rotation_w2c, t_w2c[:, None]]).reshape(-1)
    line = "1000 0.5 0.9 0.5 0.5 0 0 " + " ".join(f"{v:.9f}" for v in w2c)
    path = tmp_path / "abc.txt"
    path.write_text("https://www.youtube.com/watch?v=xyz\n" + line + "\n" + line + "\n")
    trajectory = load_realestate10k(path)
    assert len(trajectory) == 2
    np.testing.assert_allclose(trajectory.poses[0].position, centre, atol=1e-9)
    np.testing.assert_allclose(trajectory.poses[0].rotation, rotation_c2w, atol=1e-9)


def test_fit_into_scene_reorients_places_scales_and_crops(room):
    # A KITTI-like path: world y points down, the car drives along world +z (camera forward) 0.1 m per frame, and
    # looks 10 degrees to its left.
    look = Pose.look_at([0, 0, 0], [math.sin(math.radians(-10)), 0, math.cos(math.radians(-10))], up=[0, -1, 0])
    poses = [Pose(look.rotation, [0.0, 0.0, 0.1 * i]) for i in range(100)]
    fitted = fit_into_scene(Trajectory("kitti-like", tuple(poses)), room)
    first = fitted.poses[0]
    np.testing.assert_allclose(first.position, room.start_position_m, atol=1e-9)
    np.testing.assert_allclose(np.mean([-p.rotation[:, 1] for p in fitted.poses], axis=0), [0, 0, 1], atol=1e-9)
    assert math.atan2(first.forward[1], first.forward[0]) == pytest.approx(room.start_heading_rad, abs=1e-9)
    # Metric paths keep their scale: 0.1 m per frame.
    assert np.linalg.norm(fitted.poses[1].position - first.position) == pytest.approx(0.1)
    # Cropped where the path leaves the room's free space (x <= 2 m from the spawn at x = -1.5, moving along +x
    # turned 10 degrees to the right of the camera's heading).
    assert 20 < len(fitted) < 100
    assert room.is_free(np.stack([p.position for p in fitted.poses])).all()
    nxt = fitted.poses[-1].position + (fitted.poses[-1].position - fitted.poses[-2].position)
    assert not room.is_free(nxt[None])[0]
    # Scale-free paths are scaled to the stated length; stride and max_frames apply.
    scaled = fit_into_scene(Trajectory("re10k-like", tuple(poses[:16])), room, scale_to_length_m=1.5)
    assert path_length_m(scaled.poses) == pytest.approx(1.5)
    assert len(fit_into_scene(Trajectory("t", tuple(poses)), room, stride=2, max_frames=5)) == 5


def test_procedural_trajectories_stay_free_and_revisit(room, street):
    for kind, scene, frames in [("loop", room, 80), ("look-around", room, 60), ("random-walk", room, 50),
                                ("driving", street, 100)]:
        trajectory = make_trajectory(kind, scene, frames, seed=1)
        assert len(trajectory) == frames, kind
        centres = np.stack([p.position for p in trajectory.poses])
        assert scene.is_free(centres).all(), kind
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert steps.max() < (2.0 if kind == "driving" else 0.25), kind
        if kind != "random-walk":
            pairs = metrics.revisits(trajectory.poses)
            assert len(pairs) >= 5, kind
    loop = make_trajectory("loop", room, 80)
    assert loop.poses[0].distance_to(loop.poses[-1])[0] < 1e-9
    with pytest.raises(InvalidInputError, match="street"):
        make_trajectory("driving", room, 50)
    with pytest.raises(NotFoundError):
        make_trajectory("teleport", room, 50)
