"""Each example in ``examples/``, run briefly as a script against a real server (``WorldServer``, default generator
``continue``) on 127.0.0.1, and what it wrote read back: the driving dataset's transforms.json and TUM files (poses,
intrinsics, file references), the agent's summary, the game's picks, the Unity loop's poses."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldweave.bridge.eval.scenes import make_street
from worldweave.bridge.eval.trajectories import driving, load_tum
from worldweave.proto.geometry import Intrinsics, Quaternion
from worldweave.sim_clients.conventions import UNITY, TransformPose

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ("agent_explore", "driving_capture", "game_prototype", "unity_like_client")
WIDTH, HEIGHT = 64, 48
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def server(default_server):
    """The default-generator server (``continue``), as ``worldweave serve`` starts it."""
    return default_server


def run_example(name: str, *args: str) -> int:
    """Run ``examples/NAME.py`` as ``python examples/NAME.py ARGS`` does (as ``__main__``, with its own argv)."""
    argv = sys.argv
    sys.argv = [str(EXAMPLES / f"{name}.py"), *args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = argv
    raise AssertionError(f"{name}.py did not exit through SystemExit")


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_example_has_help_and_a_docstring(name, capsys):
    assert run_example(name, "--help") == 0
    first_line = (EXAMPLES / f"{name}.py").read_text().split('"""')[1].splitlines()[0]
    assert first_line in capsys.readouterr().out


def read_transforms(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    transforms = json.loads((out / "transforms.json").read_text())
    by_camera: dict[str, list[dict]] = {"front": [], "left": [], "right": []}
    for entry in transforms["frames"]:
        by_camera[entry["camera"]].append(entry)
    return transforms, by_camera


def check_dataset(out: Path, poses: int) -> dict[str, np.ndarray]:
    """Read the captured dataset back; return each camera's (poses, 4, 4) OpenCV camera-to-world matrices."""
    transforms, by_camera = read_transforms(out)
    expected = Intrinsics.from_fov(WIDTH, HEIGHT, fov_x_deg=90.0)
    assert transforms["camera_model"] == "OPENCV"
    assert (transforms["w"], transforms["h"]) == (WIDTH, HEIGHT)
    for key, value in (("fl_x", expected.fx), ("fl_y", expected.fy), ("cx", expected.cx), ("cy", expected.cy)):
        assert transforms[key] == pytest.approx(value)
    c2w = {}
    for camera, entries in by_camera.items():
        assert len(entries) == poses
        tum = load_tum(out / f"poses_{camera}.txt")
        stamps = [float(line.split()[0]) for line in (out / f"poses_{camera}.txt").read_text().splitlines()[1:]]
        np.testing.assert_allclose(stamps, np.arange(poses) * 0.1, atol=1e-6)
        for index, (entry, pose) in enumerate(zip(entries, tum.poses)):
            assert entry["file_path"] == f"images/{camera}/{index:06d}.png"
            assert entry["depth_file_path"] == f"depth/{camera}/{index:06d}.png"
            rgb = Image.open(out / entry["file_path"])
            depth = np.asarray(Image.open(out / entry["depth_file_path"]))
            assert rgb.mode == "RGB" and rgb.size == (WIDTH, HEIGHT)
            assert depth.dtype == np.uint16 and depth.shape == (HEIGHT, WIDTH)
            if index == 0:  # the seed views' poses: the memory knows what is there (later, far steps may not)
                assert depth.max() > 0
            # nerfstudio's matrix is the TUM pose with OpenGL camera axes (x right, y up, z back).
            opencv = np.asarray(entry["transform_matrix"]) @ OPENCV_TO_OPENGL
            np.testing.assert_allclose(opencv, pose.matrix, atol=1e-6)
        c2w[camera] = np.stack([p.matrix for p in tum.poses])
    # The rig is rigid: every camera implies the same vehicle pose.
    rig = {name: np.asarray(m) for name, m in json.loads((out / "rig.json").read_text())["T_vehicle_cam"].items()}
    vehicles = {name: c2w[name] @ np.linalg.inv(rig[name]) for name in c2w}
    np.testing.assert_allclose(vehicles["left"], vehicles["front"], atol=1e-5)
    np.testing.assert_allclose(vehicles["right"], vehicles["front"], atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vehicle_poses"] == poses and summary["images"] == 3 * poses
    return {"vehicle": vehicles["front"], **c2w}


def test_driving_capture_on_the_road_loop(server, tmp_path):
    out = tmp_path / "loop"
    assert run_example("driving_capture", "--server", server.address, "--out", str(out), "--frames", "8",
                       "--width", str(WIDTH), "--height", str(HEIGHT)) == 0
    poses = check_dataset(out, 8)
    # The vehicle follows the generated loop: the path's camera centres, level, heading along the road.
    path = driving(make_street(0), 8)
    np.testing.assert_allclose(poses["vehicle"][:, :3, 3], [p.position for p in path.poses], atol=1e-5)
    np.testing.assert_allclose(poses["vehicle"][:, 2, :3], np.tile([0.0, 0.0, 1.0], (8, 1)), atol=1e-6)
    # Front camera 0.6 m ahead of the vehicle, side cameras square to it on the ground (all tilted 5° down).
    np.testing.assert_allclose(poses["front"][0, :3, 3] - poses["vehicle"][0, :3, 3], [0.6, 0.0, 0.0], atol=1e-5)
    assert abs(poses["front"][0, :2, 2] @ poses["left"][0, :2, 2]) < 1e-6
    np.testing.assert_allclose(poses["left"][0, 2, 2], -math.sin(math.radians(5.0)), atol=1e-6)


def test_driving_capture_from_a_kitti_poses_file(server, tmp_path):
    # KITTI odometry: 3x4 cam0-to-world rows, camera looking along +z, y down; 0.5 m steps straight ahead.
    kitti = tmp_path / "00.txt"
    lines = [" ".join(f"{v:.6e}" for v in np.hstack([np.eye(3), [[0.0], [0.0], [0.5 * i]]]).ravel()) for i in range(11)]
    kitti.write_text("\n".join(lines) + "\n")
    out = tmp_path / "kitti"
    assert run_example("driving_capture", "--server", server.address, "--out", str(out), "--kitti", str(kitti),
                       "--stride", "2", "--frames", "4", "--width", str(WIDTH), "--height", str(HEIGHT)) == 0
    poses = check_dataset(out, 4)
    # Placed at the street's spawn, heading +x (the rule of fit_into_scene), 1 m apart after the stride.
    np.testing.assert_allclose(poses["vehicle"][:, :3, 3], [[x, -13.5, 1.6] for x in (0.0, 1.0, 2.0, 3.0)], atol=1e-6)
    np.testing.assert_allclose(poses["front"][:, :3, 2] @ [1.0, 0.0, 0.0], math.cos(math.radians(5.0)), atol=1e-6)


def test_agent_explore_walks_until_it_collides(server, tmp_path):
    # With no clearance the policy never turns: it walks into the room's wall or furniture within its 3 m.
    assert run_example("agent_explore", "--server", server.address, "--out", str(tmp_path), "--steps", "60",
                       "--clearance", "0", "--width", str(WIDTH), "--height", str(HEIGHT)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ended_by"] == "collision" and summary["last_clearance_m"] <= 0
    assert 1 <= summary["steps"] < 60
    assert summary["covered_area_m2"] >= summary["start_area_m2"] > 0
    lines = (tmp_path / "trajectory.txt").read_text().splitlines()[1:]
    rows = np.array([[float(x) for x in line.split()] for line in lines])
    assert len(rows) == summary["steps"] + 1
    np.testing.assert_allclose(rows[:, 0], np.arange(len(rows)) * 0.1, atol=1e-3)
    assert np.all(np.linalg.norm(np.diff(rows[:, 1:4], axis=0), axis=1) <= 0.1 + 1e-5)  # at most 1 m/s x 0.1 s


def test_game_prototype_picks_what_the_frames_show(server, tmp_path):
    # At the example's default 160 x 120 a pixel of the room's walls (~3 m away) spans about one 3 cm voxel; much
    # coarser frames leave the memory's surface with gaps a ray slips through (memory re-fuses only depth that lands
    # on its points or fits a plane through them, never a footprint's smear).
    width, height = 160, 120
    assert run_example("game_prototype", "--server", server.address, "--out", str(tmp_path), "--frames", "8",
                       "--width", str(width), "--height", str(height)) == 0
    report = json.loads((tmp_path / "picks.json").read_text())
    picks = report["picks"]
    assert len(picks) == 8 and report["summary"]["hit_rate"] >= 0.75
    for pick in picks:
        rgb = np.asarray(Image.open(tmp_path / "frames" / f"{pick['frame']:06d}.png"))
        u, v = round((width - 1) / 2), round((height - 1) / 2)
        assert tuple(rgb[v, u]) == ((0, 255, 0) if pick["hit"] else (255, 0, 0))
        if pick["hit"]:
            c2w = np.asarray(pick["c2w"])
            to_point = np.asarray(pick["point_m"]) - c2w[:3, 3]
            assert np.linalg.norm(to_point) == pytest.approx(pick["distance_m"], abs=0.05)
            assert to_point @ c2w[:3, 2] > 0  # in front of the camera
    # The memory's answer and the frame's own depth agree to about a voxel (3 cm).
    assert report["summary"]["median_abs_ray_minus_frame_m"] < 0.06


def test_unity_like_client_round_trips_unity_poses(server, tmp_path):
    assert run_example("unity_like_client", "--server", server.address, "--out", str(tmp_path), "--ticks", "8",
                       "--width", str(WIDTH), "--height", str(HEIGHT)) == 0
    log = json.loads((tmp_path / "unity_log.json").read_text())["ticks"]
    assert len(log) == 8 and len(list((tmp_path / "frames").glob("*.png"))) == 8
    for entry in log:
        sent, received = entry["sent"], entry["received"]
        np.testing.assert_allclose(received["position"], sent["position"], atol=1e-9)
        q_sent = np.array([sent["rotation"][k] for k in "xyzw"])
        q_back = np.array([received["rotation"][k] for k in "xyzw"])
        assert abs(q_sent @ q_back) == pytest.approx(1.0, abs=1e-9)  # the same rotation (q and -q alike)
        x, y, z = sent["position"]
        assert y == pytest.approx(1.5) and math.hypot(x, z) == pytest.approx(1.0, rel=0.02)  # circling the centre
        # Unity (x right, y up, z forward) is canonical (z, -x, y): the camera stays at eye height in the room.
        rotation = sent["rotation"]
        c2w = UNITY.to_canonical(TransformPose(np.array(sent["position"]),
                                               Quaternion(qw=rotation["w"], qx=rotation["x"], qy=rotation["y"],
                                                          qz=rotation["z"])))
        np.testing.assert_allclose(c2w[:3, 3], [z, -x, y], atol=1e-12)
        assert c2w[2, 2] == pytest.approx(-math.sin(math.radians(10.0)))  # pitched 10° down
    assert [entry["frame_id"] for entry in log] == sorted({entry["frame_id"] for entry in log})
