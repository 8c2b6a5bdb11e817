"""Multi-camera rigs for ``client.step(world_id, body_poses, rig=...)``: the shared ``Rig`` / ``RigCamera`` types
(``worldweave.proto.rig``) and helpers that build mounts.

A rig's body pose is a 4x4 camera-to-world matrix like any pose (the body frame has OpenCV axes: x right, y down,
z forward); a camera's mount is its camera-to-body matrix ``T_body_cam`` in metres, so the camera sees from
``T_world_body @ T_body_cam``. Each body pose answers one frame per camera, pose-major (``Frame.pose_index``,
``Frame.camera_index``), and memory moves by one version per body pose::

    rig = stereo_rig(Intrinsics.from_fov(640, 480, fov_x_deg=90), baseline_m=0.12)
    left, right = client.step(world_id, body_c2w, rig=rig)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.rig import Rig, RigCamera

__all__ = ["Rig", "RigCamera", "mount", "stereo_rig"]


def mount(position_m: Sequence[float] = (0.0, 0.0, 0.0), *, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """A camera-to-body matrix ``T_body_cam`` (4x4 float64): the camera centre at ``position_m`` in the body frame
    (metres; x right, y down, z forward), turned ``yaw_deg`` to the right (about the body's y axis), then tilted
    ``pitch_deg`` up (about its own x axis)."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    turn = np.array([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)],
                     [0.0, math.sin(pitch), math.cos(pitch)]])
    matrix = np.eye(4)
    matrix[:3, :3] = turn @ tilt
    matrix[:3, 3] = np.asarray(position_m, dtype=np.float64).reshape(3)
    return matrix


def stereo_rig(intrinsics: Intrinsics, baseline_m: float) -> Rig:
    """Two parallel cameras ``baseline_m`` apart along the body's x axis (camera 0 left, camera 1 right), the body
    pose midway between them."""
    half = baseline_m / 2.0
    return Rig((RigCamera(intrinsics, mount((-half, 0.0, 0.0))), RigCamera(intrinsics, mount((half, 0.0, 0.0)))))
