"""Record a run as an MCAP file that Foxglove opens as is: Foxglove's well-known protobuf schemas, written with the
maintained ``mcap`` / ``mcap-protobuf-support`` libraries.

``worldweave record`` renders a world's memory along a TUM pose file (camera-to-world, OpenCV camera, metres; what
``examples/driving_capture.py`` writes), scans a LiDAR at each camera and writes camera images, calibration, LiDAR
points, poses and frame transforms, then the world's cloud. ``McapRecorder`` is the writer, for scripts of your own;
``docs/sensors.md`` lists its topics and schemas.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.Pose_pb2 import Pose as FoxglovePose
from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion as FoxgloveQuaternion
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf.timestamp_pb2 import Timestamp
from mcap_protobuf.writer import Writer
from PIL import Image

from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose, Quaternion

WORLD_FRAME = "world"
"""The frame id of the world (Z up, metres)."""
_FLOAT32 = PackedElementField.NumericType.FLOAT32
_UINT8 = PackedElementField.NumericType.UINT8
_UINT16 = PackedElementField.NumericType.UINT16
LabelKind = Literal["semantic", "instance"]
"""The label images a recorder writes (``McapRecorder.labels``): semantic class ids and instance ids."""


def _stamp(t_s: float) -> Timestamp:
    seconds = int(np.floor(t_s))
    return Timestamp(seconds=seconds, nanos=int(round((t_s - seconds) * 1e9)) % 1_000_000_000)


def _pose(T_world_frame: np.ndarray) -> FoxglovePose:
    pose = Pose.from_matrix(np.asarray(T_world_frame, np.float64))
    q = pose.quaternion
    x, y, z = (float(v) for v in pose.position)
    return FoxglovePose(position=Vector3(x=x, y=y, z=z),
                        orientation=FoxgloveQuaternion(x=q.qx, y=q.qy, z=q.qz, w=q.qw))


class McapRecorder:
    """An MCAP file being written with Foxglove's protobuf schemas; a context manager. Topics:

    * ``/NAME/image`` (``foxglove.CompressedImage``): a camera's RGB frame, JPEG or PNG, in frame NAME;
    * ``/NAME/calibration`` (``foxglove.CameraCalibration``): its pinhole intrinsics (K, P; no distortion);
    * ``/NAME/semantic``, ``/NAME/instance`` (``foxglove.RawImage``, encoding ``mono16``): a camera's label images,
      one id per pixel (0 = unlabelled), in frame NAME;
    * ``/NAME/pose`` (``foxglove.PoseInFrame``): the sensor's pose in ``world``;
    * ``/NAME/points`` (``foxglove.PointCloud``): a LiDAR scan's hits in frame NAME, fields ``x y z`` float32 metres,
      ``intensity`` float32, ``ring`` uint16;
    * ``/tf`` (``foxglove.FrameTransforms``): ``world`` -> NAME for every sensor written;
    * ``/world/points`` (``foxglove.PointCloud``): the world's voxels with ``red green blue alpha`` uint8.

    Frames: ``world`` is the world frame (Z up, metres); a camera's frame is its OpenCV optical frame (x right, y
    down, z forward), what Foxglove expects of a ``CameraCalibration``; a LiDAR's is REP-103 (x forward, y left, z up).

    ``path``: the file (its folder is created). Each method takes ``t_s``, the time of the data in seconds (any epoch,
    >= 0; Foxglove shows it as a date), and the sensor's name (its frame id and topic prefix)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        self._writer = Writer(self._file)
        self._closed = False

    def __enter__(self) -> McapRecorder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Finish the file (its summary and index) and close it."""
        if not self._closed:
            self._writer.finish()
            self._file.close()
            self._closed = True

    def _write(self, topic: str, message, t_s: float) -> None:
        if not (np.isfinite(t_s) and t_s >= 0):
            raise InvalidInputError(f"recording time must be a finite number of seconds >= 0, got {t_s!r}")
        nanoseconds = int(round(t_s * 1e9))
        self._writer.write_message(topic, message, log_time=nanoseconds, publish_time=nanoseconds)

    def transform(self, name: str, t_s: float, T_world_frame: np.ndarray) -> None:
        """``world`` -> ``name`` on ``/tf`` (4x4 ``T_world_frame``, metres)."""
        pose = _pose(T_world_frame)
        self._write("/tf", FrameTransforms(transforms=[FrameTransform(
            timestamp=_stamp(t_s), parent_frame_id=WORLD_FRAME, child_frame_id=name, translation=pose.position,
            rotation=pose.orientation,
        )]), t_s)
        self._write(f"/{name}/pose", PoseInFrame(timestamp=_stamp(t_s), frame_id=WORLD_FRAME, pose=pose), t_s)

    def camera(
        self, name: str, t_s: float, rgb: np.ndarray, intrinsics: Intrinsics, T_world_cam: np.ndarray, *,
        image_format: str = "jpeg", jpeg_quality: int = 90,
    ) -> None:
        """A camera frame: uint8 (H, W, 3) ``rgb`` as ``image_format`` ("jpeg" or "png"), its ``intrinsics`` and its
        camera-to-world pose (4x4, OpenCV camera axes) as ``/tf`` and ``/NAME/pose``."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (intrinsics.height, intrinsics.width, 3):
            raise InvalidInputError(
                f"camera {name!r}: rgb must be uint8 ({intrinsics.height}, {intrinsics.width}, 3), got {rgb.dtype} {rgb.shape}"
            )
        if image_format not in ("jpeg", "png"):
            raise InvalidInputError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=image_format.upper(), **({"quality": jpeg_quality} if image_format == "jpeg" else {}))
        self._write(f"/{name}/image", CompressedImage(timestamp=_stamp(t_s), frame_id=name, data=buffer.getvalue(),
                                                      format=image_format), t_s)
        k = intrinsics
        self._write(f"/{name}/calibration", CameraCalibration(
            timestamp=_stamp(t_s), frame_id=name, width=k.width, height=k.height, distortion_model="plumb_bob",
            D=[0.0] * 5, K=[k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0], R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
            P=[k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        ), t_s)
        self.transform(name, t_s, T_world_cam)

    def labels(self, name: str, t_s: float, labels: np.ndarray, *, kind: LabelKind = "semantic") -> None:
        """A camera's label image as ``/NAME/KIND`` (``kind``: "semantic" or "instance"), frame NAME: an integer
        (H, W) image of ids, 0 = unlabelled, written as ``foxglove.RawImage`` with encoding ``mono16`` (16-bit
        little-endian, ``step`` = 2 W bytes). Raw and 16-bit so that every id reads back exactly (a JPEG would blend
        ids; Foxglove colour-maps mono16 images); the file's chunk compression shrinks the flat regions. Ids must lie
        in 0..65535 (a semantic class always does; an instance id above it is ``InvalidInputError``). Pose and
        calibration are the camera's (``camera``)."""
        if kind not in get_args(LabelKind):
            raise InvalidInputError(f"label kind must be one of {get_args(LabelKind)}, got {kind!r}")
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise InvalidInputError(f"{kind} labels of {name!r} must be an integer (H, W) image, got {labels.dtype} {labels.shape}")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 0xFFFF):
            raise InvalidInputError(
                f"{kind} labels of {name!r} must lie in 0..65535 to be recorded (mono16), got {labels.min()}..{labels.max()}"
            )
        height, width = labels.shape
        self._write(f"/{name}/{kind}", RawImage(
            timestamp=_stamp(t_s), frame_id=name, width=width, height=height, encoding="mono16", step=2 * width,
            data=labels.astype("<u2").tobytes(),
        ), t_s)

    def lidar(
        self, name: str, t_s: float, points_m: np.ndarray, intensity: np.ndarray, ring: np.ndarray,
        T_world_sensor: np.ndarray,
    ) -> None:
        """A LiDAR scan's hits: (N, 3) points in the sensor frame (metres), (N,) intensity in [0, 1], (N,) ring, as
        ``/NAME/points`` in frame NAME, and the sensor's pose (4x4 ``T_world_sensor``, REP-103 axes)."""
        points = np.asarray(points_m, np.float32).reshape(-1, 3)
        n = len(points)
        if np.shape(intensity) != (n,) or np.shape(ring) != (n,):
            raise InvalidInputError(f"lidar {name!r}: intensity and ring need one value per point ({n})")
        record = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
        record["x"], record["y"], record["z"] = points.T
        record["intensity"], record["ring"] = intensity, ring
        fields = [PackedElementField(name=axis, offset=4 * i, type=_FLOAT32) for i, axis in enumerate("xyz")]
        fields += [PackedElementField(name="intensity", offset=12, type=_FLOAT32),
                   PackedElementField(name="ring", offset=16, type=_UINT16)]
        self._write(f"/{name}/points", PointCloud(
            timestamp=_stamp(t_s), frame_id=name, pose=_pose(np.eye(4)), point_stride=record.itemsize, fields=fields,
            data=record.tobytes(),
        ), t_s)
        self.transform(name, t_s, T_world_sensor)

    def world_points(self, t_s: float, points_m: np.ndarray, colors: np.ndarray) -> None:
        """The world's cloud as ``/world/points``: (N, 3) world points (metres) with uint8 (N, 3) colours."""
        points = np.asarray(points_m, np.float32).reshape(-1, 3)
        colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        if len(colors) != len(points):
            raise InvalidInputError(f"world_points: {len(points)} points but {len(colors)} colours")
        record = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgba", "u1", (4,))])
        record["x"], record["y"], record["z"] = points.T
        record["rgba"][:, :3], record["rgba"][:, 3] = colors, 255
        fields = [PackedElementField(name=axis, offset=4 * i, type=_FLOAT32) for i, axis in enumerate("xyz")]
        fields += [PackedElementField(name=channel, offset=12 + i, type=_UINT8) for i, channel in enumerate(("red", "green", "blue", "alpha"))]
        self._write("/world/points", PointCloud(
            timestamp=_stamp(t_s), frame_id=WORLD_FRAME, pose=_pose(np.eye(4)), point_stride=record.itemsize,
            fields=fields, data=record.tobytes(),
        ), t_s)


# ------------------------------------------------------------------------------------------------ worldweave record


def read_tum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A TUM pose file (``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments; camera-to-world, OpenCV camera
    axes, metres) -> (N,) seconds and (N, 4, 4) poses; a malformed line is ``InvalidInputError`` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise InvalidInputError(f"cannot read the pose file {path}: {error.strerror}") from None
    times, poses = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            t, x, y, z, qx, qy, qz, qw = (float(v) for v in line.split())
        except ValueError:
            raise InvalidInputError(f"{path}:{number}: a TUM line is 'timestamp tx ty tz qx qy qz qw', got {line!r}") from None
        times.append(t)
        poses.append(Pose.from_position_quaternion(np.array([x, y, z]), Quaternion(qw, qx, qy, qz)).matrix)
    if not poses:
        raise InvalidInputError(f"{path} holds no poses")
    return np.asarray(times), np.stack(poses)


SENSOR_FROM_OPENCV = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""``T_cam_sensor``: REP-103 sensor axes (x forward, y left, z up) expressed in OpenCV camera axes, same origin."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="127.0.0.1:50051", help="the worldweave server, host:port")
    parser.add_argument("--world", required=True, help="the world's id")
    parser.add_argument("--poses", type=Path, required=True,
                        help="TUM pose file: 'timestamp tx ty tz qx qy qz qw', camera-to-world, OpenCV camera, metres")
    parser.add_argument("--out", type=Path, required=True, help="the MCAP file to write")
    parser.add_argument("--lidar-channels", type=int, default=32,
                        help="LiDAR at each camera (sensor axes: camera forward, left, up); 0: no LiDAR")
    parser.add_argument("--lidar-points", type=int, default=5600, help="LiDAR rays per scan")
    parser.add_argument("--lidar-range-m", type=float, default=50.0, help="LiDAR range, metres")
    parser.add_argument("--token", default=None, help="bearer token, when the server requires one")


def run(args: argparse.Namespace) -> int:
    """Render the world's memory at every pose of ``--poses`` (no generation, memory unchanged), scan a LiDAR there,
    and record camera, calibration, LiDAR, poses, transforms and, at the end, the world's cloud."""
    from worldweave.sim_clients.client import WorldClient
    from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

    times, poses = read_tum(args.poses)
    spec = lidar_spec(channels=args.lidar_channels, points_per_scan=args.lidar_points, range_m=args.lidar_range_m) if args.lidar_channels else None
    with WorldClient(args.server, token=args.token) as client, McapRecorder(args.out) as recorder:
        info = client.worlds.get(args.world)
        intrinsics = Intrinsics(*(getattr(info.intrinsics, f) for f in ("fx", "fy", "cx", "cy", "width", "height")))
        for t_s, c2w in zip(times, poses):
            (frame,) = client.render(args.world, c2w)
            recorder.camera("camera", float(t_s), frame.rgb, intrinsics, frame.pose)
            if spec is not None:
                T_world_sensor = c2w @ SENSOR_FROM_OPENCV
                scan = scan_lidar(client, args.world, T_world_sensor, spec)
                recorder.lidar("lidar", float(t_s), scan.points_m[scan.hit], scan.intensity[scan.hit],
                               scan.ring[scan.hit], T_world_sensor)
        cloud = client.point_cloud.crop(args.world, np.full(3, -1e4), np.full(3, 1e4))
        recorder.world_points(float(times[-1]), cloud.points_m, cloud.colors)
    print(f"wrote {args.out}: {len(poses)} poses{' with LiDAR' if spec is not None else ''}")
    return 0
