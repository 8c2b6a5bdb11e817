"""Sensors simulated from a world's memory, for SDK users: a spinning LiDAR (``scan_lidar``).

The LiDAR takes CARLA's ray-cast LiDAR parameters (``lidar_spec``) and a sensor pose ``T_world_sensor`` (4x4, world Z
up, metres; the sensor frame is ROS REP-103: x forward, y left, z up, not the OpenCV camera frame) and returns one
``LidarScan`` with an entry per ray. See ``docs/sensors.md`` for the ray pattern, the intensity rule and what
``unknown`` means.

    from worldweave.sim_clients.sensors import lidar_spec, scan_lidar

    scan = scan_lidar(client, world_id, T_world_lidar, lidar_spec(channels=32, range_m=50.0))
    xyz = scan.points_m[scan.hit]          # sensor frame, metres

Calls go through the client's ``call`` (any RPC by name), so they work with ``WorldClient`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldweave.proto.codecs import FLOAT32, UINT8, pose_message, unpack_array
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.worldweave.v1 import world_pb2 as pb


def lidar_spec(
    *,
    channels: int = 32,
    range_m: float = 50.0,
    points_per_scan: int | None = 5600,
    points_per_second: float | None = None,
    rotation_frequency_hz: float = 10.0,
    upper_fov_deg: float = 10.0,
    lower_fov_deg: float = -30.0,
    horizontal_fov_deg: float = 360.0,
) -> pb.LidarSpec:
    """A ``LidarSpec`` message with CARLA's ``sensor.lidar.ray_cast`` parameters (defaults: CARLA's, at 50 m range):
    ``channels`` lasers from ``upper_fov_deg`` (ring 0) down to ``lower_fov_deg``, degrees; ``points_per_scan`` rays
    per scan, or ``points_per_second`` at ``rotation_frequency_hz`` (then pass ``points_per_scan=None``);
    ``horizontal_fov_deg`` centred on the sensor's x axis. The server checks the values and names a bad one."""
    if (points_per_scan is None) == (points_per_second is None):
        raise InvalidInputError("lidar_spec needs exactly one of points_per_scan and points_per_second")
    spec = pb.LidarSpec(
        channels=channels, range_m=range_m, rotation_frequency_hz=rotation_frequency_hz, upper_fov_deg=upper_fov_deg,
        lower_fov_deg=lower_fov_deg, horizontal_fov_deg=horizontal_fov_deg,
    )
    if points_per_scan is not None:
        spec.points_per_scan = points_per_scan
    else:
        spec.points_per_second = points_per_second
    return spec


@dataclass(frozen=True)
class LidarScan:
    """One scan from memory, one entry per ray (N = channels x ``points_per_channel``), ring-major: every ray of
    ring 0 (the top laser) in azimuth order, then ring 1, ...

    ``points_m``: float32 (N, 3) hit points in the sensor frame (x forward, y left, z up), metres; 0 without a hit.
    ``range_m``: float32 (N,) metres to the hit (the spec's range without one). ``intensity``: float32 (N,) in [0, 1].
    ``ring``: uint8 (N,) laser index, 0 = top. ``hit``: bool (N,). ``unknown``: bool (N,), the ray ended in unknown
    space (never a hit; a ray with neither crossed observed free space to its range). ``version``: the memory version
    scanned. ``points_per_channel``: rays per laser.
    """

    points_m: np.ndarray
    range_m: np.ndarray
    intensity: np.ndarray
    ring: np.ndarray
    hit: np.ndarray
    unknown: np.ndarray
    version: int
    points_per_channel: int

    def __len__(self) -> int:
        return len(self.hit)


def scan_lidar_request(
    world_id: str, T_world_sensor: np.ndarray, spec: pb.LidarSpec, *, min_confidence: float | None = None
) -> pb.ScanLidarRequest:
    """The ``ScanLidarRequest`` for a sensor pose (4x4, world metres, REP-103 sensor axes) and a ``lidar_spec``."""
    request = pb.ScanLidarRequest(world_id=world_id, sensor_pose=pose_message(np.asarray(T_world_sensor), "T_world_sensor"),
                                  lidar=spec)
    if min_confidence is not None:
        request.min_confidence = float(min_confidence)
    return request


def decode_lidar_scan(response: pb.ScanLidarResponse) -> LidarScan:
    """A ``ScanLidarResponse`` -> ``LidarScan`` (for programs that send the request themselves, e.g. async ones)."""
    return LidarScan(
        points_m=unpack_array(response.points_m, FLOAT32, 3, "points_m"),
        range_m=unpack_array(response.range_m, FLOAT32, None, "range_m"),
        intensity=unpack_array(response.intensity, FLOAT32, None, "intensity"),
        ring=unpack_array(response.ring, UINT8, None, "ring"),
        hit=unpack_array(response.hit, UINT8, None, "hit").astype(bool),
        unknown=unpack_array(response.unknown, UINT8, None, "unknown").astype(bool),
        version=int(response.version),
        points_per_channel=int(response.points_per_channel),
    )


def scan_lidar(
    client,
    world_id: str,
    T_world_sensor: np.ndarray,
    spec: pb.LidarSpec | None = None,
    *,
    min_confidence: float | None = None,
    timeout_s: float | None = None,
) -> LidarScan:
    """One LiDAR scan of ``world_id``'s memory from ``T_world_sensor`` (4x4 float64, world Z up, metres; sensor axes
    x forward, y left, z up) with ``spec`` (``lidar_spec()``; None: CARLA's defaults at 50 m) at ``min_confidence``
    (one of the world's levels; None: its default). ``client``: a ``WorldClient``. Over the server's ray limits:
    ``LimitExceededError`` naming the limit."""
    request = scan_lidar_request(world_id, T_world_sensor, spec or lidar_spec(), min_confidence=min_confidence)
    (response,) = client.call("ScanLidar", request, timeout_s=timeout_s)
    return decode_lidar_scan(response)


__all__ = ["LidarScan", "decode_lidar_scan", "lidar_spec", "scan_lidar", "scan_lidar_request"]
