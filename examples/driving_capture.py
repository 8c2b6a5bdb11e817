"""Drive a three-camera vehicle rig through a generated street and capture a dataset (RGB, depth, segmentation,
poses, LiDAR).

The world is seeded with the rig's exact views of a procedural street (``worldweave.bridge.eval.scenes``) at the
start, with their exact label images (a semantic class per surface kind, ``SEMANTIC_CLASSES``, and an instance id per
building), so the world's memory carries those labels. The vehicle then drives the road loop (one lap and a revisit of
its start) or a KITTI odometry poses file placed on the road, and every vehicle pose is one ``Step`` with the front,
left and right camera poses, so all three frames come from the generated world, each with semantic and instance
images rendered from the world's memory after the step (what memory has labelled; content the generator adds is
unlabelled, 0); a roof LiDAR (CARLA's parameters) then scans the world's memory. Run against a server:

    worldweave serve --port 50051 &
    python examples/driving_capture.py --server 127.0.0.1:50051 --out out/driving --frames 120
    python examples/driving_capture.py --kitti 00.txt --stride 5 --out out/kitti

Writes, under ``--out``:

* ``images/{front,left,right}/NNNNNN.png``: RGB8 frames; ``depth/{front,left,right}/NNNNNN.png``: uint16 depth in
  millimetres along the optical axis, 0 = unknown (nerfstudio's default ``depth_unit_scale_factor`` 1e-3);
* ``segmentation/{front,left,right}/NNNNNN.png``: uint16 semantic class id per pixel, 0 = unlabelled;
  ``instances/{front,left,right}/NNNNNN.png``: uint16 instance id per pixel, 0 = none;
* ``classes.json``: the semantic class ids by name;
* ``transforms.json``: nerfstudio's layout: shared pinhole intrinsics (``camera_model`` OPENCV, no distortion) and one
  entry per image with ``file_path``, ``depth_file_path`` and ``transform_matrix``, the camera-to-world pose in
  nerfstudio's **OpenGL** camera axes (x right, y up, z back) in the world's Z-up metres;
* ``poses_{front,left,right}.txt``: TUM lines ``timestamp tx ty tz qx qy qz qw``, camera-to-world, **OpenCV** camera
  axes, metres, timestamps in seconds at ``--rate-hz``;
* ``rig.json``: the fixed camera-to-vehicle extrinsics (vehicle frame x forward, y left, z up, OpenCV cameras);
* ``capture.mcap``: the run for Foxglove (``worldweave.sim_clients.recording``): per camera ``/NAME/image``
  (JPEG), ``/NAME/semantic`` and ``/NAME/instance`` (``foxglove.RawImage``, ``mono16`` ids, exact),
  ``/NAME/calibration`` and ``/NAME/pose``, the LiDAR's hits ``/lidar/points`` (sensor frame: x forward, y
  left, z up; ``intensity``, ``ring``) and ``/lidar/pose``, ``/tf`` (world -> every sensor), at ``--rate-hz``;
* ``summary.json``: frame counts, path length, mean memory coverage and share of labelled pixels per camera, LiDAR
  hits, timings.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from worldweave.bridge.eval.scenes import SEMANTIC_CLASSES, make_street
from worldweave.bridge.eval.trajectories import (
    driving,
    fit_into_scene,
    load_kitti,
    path_length_m,
    save_tum,
)
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.recording import McapRecorder
from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

CAMERAS = ("front", "left", "right")
"""The rig's cameras, in the order of each step's poses."""
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplies an OpenCV camera-to-world pose into nerfstudio's OpenGL camera axes."""


def camera_to_vehicle(position_m: tuple[float, float, float], yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """4x4 ``T_vehicle_cam``: an OpenCV camera at ``position_m`` in the vehicle frame (x forward, y left, z up),
    looking along ``yaw_deg`` (about +z, positive to the left) and ``pitch_deg`` (positive up)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    transform = np.eye(4)
    transform[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    transform[:3, 3] = position_m
    return transform


RIG = {
    "front": camera_to_vehicle((0.6, 0.0, 0.0), 0.0, -5.0),
    "left": camera_to_vehicle((0.0, 0.4, 0.0), 90.0, -5.0),
    "right": camera_to_vehicle((0.0, -0.4, 0.0), -90.0, -5.0),
}
"""Fixed extrinsics ``T_vehicle_cam`` (metres, degrees): front camera 0.6 m ahead of the vehicle origin, side cameras
0.4 m to each side looking square to the left and right; all tilted 5° down. The origin is at camera height."""
T_VEHICLE_LIDAR = np.eye(4)
T_VEHICLE_LIDAR[2, 3] = 0.3
"""The roof LiDAR: 0.3 m above the vehicle origin, axes as the vehicle's (x forward, y left, z up)."""


def vehicle_pose(camera_pose: Pose) -> np.ndarray:
    """4x4 ``T_world_vehicle``, level, at a path camera's centre and heading (its pitch and roll dropped: the road
    is flat)."""
    forward = camera_pose.forward
    yaw = math.atan2(forward[1], forward[0])
    transform = np.eye(4)
    transform[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
    transform[:3, 3] = camera_pose.position
    return transform


def save_depth_mm(path: Path, depth_m: np.ndarray) -> None:
    """float metres (0 = unknown) -> 16-bit PNG in millimetres, saturating at 65.535 m."""
    Image.fromarray(np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype(np.uint16)).save(path)


def save_labels(path: Path, labels: np.ndarray) -> None:
    """Integer (H, W) ids (0 = unlabelled) -> 16-bit PNG. The ids fit: ``McapRecorder.labels``, called first, refuses
    any above 65535 (the street's are far below)."""
    Image.fromarray(labels.astype(np.uint16)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051", help="address of a running `worldweave serve`")
    parser.add_argument("--out", type=Path, default=Path("out/driving_capture"), help="dataset folder to write")
    parser.add_argument("--kitti", type=Path, default=None,
                        help="KITTI odometry poses file (12 numbers per line) to drive instead of the road loop")
    parser.add_argument("--stride", type=int, default=1, help="keep every STRIDE-th KITTI pose")
    parser.add_argument("--frames", type=int, default=120, help="vehicle poses to capture (at most, for --kitti)")
    parser.add_argument("--width", type=int, default=320, help="image width, pixels")
    parser.add_argument("--height", type=int, default=240, help="image height, pixels")
    parser.add_argument("--fov-x", type=float, default=90.0, help="horizontal field of view of every camera, degrees")
    parser.add_argument("--rate-hz", type=float, default=10.0,
                        help="vehicle poses per second, for the TUM timestamps (KITTI: 10 / stride)")
    parser.add_argument("--voxel-size", type=float, default=0.05, help="voxel edge of the world's memory, metres")
    parser.add_argument("--seed", type=int, default=0, help="seed of the procedural street")
    parser.add_argument("--lidar-channels", type=int, default=32, help="roof LiDAR lasers (CARLA's channels)")
    parser.add_argument("--lidar-points", type=int, default=5600, help="roof LiDAR rays per scan (CARLA: 56,000/s at 10 Hz)")
    parser.add_argument("--lidar-range", type=float, default=50.0, help="roof LiDAR range, metres")
    args = parser.parse_args(argv)

    # 1. The street and the vehicle's path: the generated loop, or a KITTI file placed on the road.
    scene = make_street(args.seed)
    if args.kitti is not None:
        path = fit_into_scene(load_kitti(args.kitti), scene, stride=args.stride, max_frames=args.frames)
    else:
        path = driving(scene, args.frames)
    vehicles = [vehicle_pose(pose) for pose in path.poses]
    intrinsics = Intrinsics.from_fov(args.width, args.height, fov_x_deg=args.fov_x)

    # 2. Seed a world with the rig's exact views at the start, and their exact labels.
    seed = []
    for name in CAMERAS:
        c2w = vehicles[0] @ RIG[name]
        view = scene.render(Pose.from_matrix(c2w), intrinsics, labels=True)
        seed.append((view.rgb, view.depth, c2w, view.semantic, view.instance))

    for kind in ("images", "depth", "segmentation", "instances"):
        for name in CAMERAS:
            (args.out / kind / name).mkdir(parents=True, exist_ok=True)
    entries, poses_cv = [], {name: [] for name in CAMERAS}
    coverage = {name: [] for name in CAMERAS}
    labelled = {name: [] for name in CAMERAS}
    lidar = lidar_spec(channels=args.lidar_channels, points_per_scan=args.lidar_points, range_m=args.lidar_range,
                       upper_fov_deg=10.0, lower_fov_deg=-30.0)
    lidar_hits = []
    started = time.perf_counter()
    with WorldClient(args.server) as client, McapRecorder(args.out / "capture.mcap") as recorder:
        world = client.worlds.create(seed, intrinsics, prompt="a city street", voxel_size_m=args.voxel_size)
        try:
            # 3. Drive: one step per vehicle pose, the three cameras together; then the roof LiDAR scans memory.
            for index, vehicle in enumerate(tqdm(vehicles, desc="driving", unit="pose")):
                t_s = index / args.rate_hz
                c2ws = np.stack([vehicle @ RIG[name] for name in CAMERAS])
                frames = client.step(world.world_id, c2ws, depth="uint16_mm", semantic=True, instance=True)
                T_world_lidar = vehicle @ T_VEHICLE_LIDAR
                scan = scan_lidar(client, world.world_id, T_world_lidar, lidar)
                recorder.lidar("lidar", t_s, scan.points_m[scan.hit], scan.intensity[scan.hit], scan.ring[scan.hit],
                               T_world_lidar)
                lidar_hits.append(int(scan.hit.sum()))
                for name, frame in zip(CAMERAS, frames):
                    recorder.camera(name, t_s, frame.rgb, intrinsics, frame.pose)
                    recorder.labels(name, t_s, frame.semantic, kind="semantic")
                    recorder.labels(name, t_s, frame.instance, kind="instance")
                    image = f"images/{name}/{index:06d}.png"
                    depth = f"depth/{name}/{index:06d}.png"
                    Image.fromarray(frame.rgb).save(args.out / image)
                    save_depth_mm(args.out / depth, frame.depth)
                    save_labels(args.out / f"segmentation/{name}/{index:06d}.png", frame.semantic)
                    save_labels(args.out / f"instances/{name}/{index:06d}.png", frame.instance)
                    poses_cv[name].append(frame.pose)
                    coverage[name].append(frame.coverage)
                    labelled[name].append(float(np.mean(frame.semantic > 0)))
                    entries.append({"file_path": image, "depth_file_path": depth, "camera": name,
                                    "transform_matrix": (frame.pose @ OPENCV_TO_OPENGL).tolist()})
        finally:
            client.worlds.delete(world.world_id)
    elapsed_s = time.perf_counter() - started

    # 4. The dataset's descriptions.
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": intrinsics.fx, "fl_y": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
        "w": intrinsics.width, "h": intrinsics.height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": entries,
    }
    (args.out / "transforms.json").write_text(json.dumps(transforms, indent=1))
    timestamps_s = [index / args.rate_hz for index in range(len(vehicles))]
    for name in CAMERAS:
        save_tum(args.out / f"poses_{name}.txt", [Pose.from_matrix(c2w) for c2w in poses_cv[name]], timestamps_s)
    (args.out / "classes.json").write_text(json.dumps(
        {"semantic_classes": SEMANTIC_CLASSES, "unlabelled": 0, "instances": "one id per building, 0 = none"}, indent=1))
    (args.out / "rig.json").write_text(json.dumps(
        {"vehicle_frame": "x forward, y left, z up (metres)", "camera_frame": "opencv",
         "T_vehicle_cam": {name: RIG[name].tolist() for name in CAMERAS}}, indent=1))
    summary = {
        "path": args.kitti.name if args.kitti is not None else "road loop",
        "vehicle_poses": len(vehicles),
        "images": len(entries),
        "path_length_m": path_length_m(path.poses),
        "mean_coverage": {name: float(np.mean(coverage[name])) for name in CAMERAS},
        "mean_labelled": {name: float(np.mean(labelled[name])) for name in CAMERAS},
        "lidar": {"channels": args.lidar_channels, "rays_per_scan": len(scan.hit), "mean_hits": float(np.mean(lidar_hits))},
        "seconds": elapsed_s,
        "seconds_per_vehicle_pose": elapsed_s / len(vehicles),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"captured {len(vehicles)} vehicle poses x {len(CAMERAS)} cameras over {summary['path_length_m']:.1f} m "
          f"in {elapsed_s:.1f} s ({summary['seconds_per_vehicle_pose']:.2f} s per pose) into {args.out}")
    print("mean memory coverage before generation: "
          + ", ".join(f"{name} {value:.2f}" for name, value in summary["mean_coverage"].items()))
    print("mean share of pixels labelled (semantic class > 0): "
          + ", ".join(f"{name} {value:.2f}" for name, value in summary["mean_labelled"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
