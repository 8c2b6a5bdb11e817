"""Camera rigs: several cameras rigidly mounted on one body, stepped together (``StepRequest.rig``).

A rig's body has a pose ``T_world_body`` (a step's poses, when it carries a rig); the body frame has a camera's axes
(OpenCV: x right, y down, z forward), so a one-camera rig with the identity mount is a plain camera. Each camera
``c`` has its own ``Intrinsics`` and a **mount** ``T_body_cam`` (camera-to-body, metres), so that
``T_world_cam = T_world_body @ T_body_cam``. A mount is rigid: its rotation is orthonormal with determinant +1
(``geometry.check_rotation``, within ``ORTHONORMAL_TOLERANCE``); a matrix that scales, shears or mirrors is refused
with ``InvalidPoseError`` naming the camera.

The one ``Rig`` type, shared by the engine (``World.step(..., rig=)``), the server and the SDK. Wire layer: numpy
only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from worldweave.proto.errors import (
    InvalidInputError,
    InvalidIntrinsicsError,
    InvalidPoseError,
)
from worldweave.proto.geometry import Intrinsics, Pose


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig: ``intrinsics`` (pixels) and ``mount``, its camera-to-body transform ``T_body_cam``: a
    ``Pose``, or a 4x4 (or 3x4) matrix in metres, checked and turned into a ``Pose`` by the ``Rig`` that holds it
    (so that an error names the camera's index)."""

    intrinsics: Intrinsics
    mount: Pose | np.ndarray = field(default_factory=Pose.identity)


@dataclass(frozen=True)
class Rig:
    """1 or more ``RigCamera`` on one body, in the order their frames are answered (camera index = position).

    Raises ``InvalidInputError`` (a subclass naming ``rig camera i``) for no cameras, intrinsics that are not an
    ``Intrinsics``, or a mount that is not a rigid transform.
    """

    cameras: tuple[RigCamera, ...]

    def __post_init__(self) -> None:
        cameras = tuple(self.cameras)
        if not cameras:
            raise InvalidInputError("a rig needs at least one camera")
        checked = []
        for i, camera in enumerate(cameras):
            if not isinstance(camera, RigCamera):
                raise InvalidInputError(f"rig camera {i} is a {type(camera).__name__}, not a RigCamera")
            if not isinstance(camera.intrinsics, Intrinsics):
                raise InvalidIntrinsicsError(f"rig camera {i}: intrinsics is a {type(camera.intrinsics).__name__}, "
                                             "not an Intrinsics")
            mount = camera.mount
            if not isinstance(mount, Pose):
                try:
                    mount = Pose.from_matrix(np.asarray(mount, dtype=np.float64))
                except InvalidPoseError as error:
                    raise InvalidPoseError(f"rig camera {i} mount (T_body_cam) is not rigid: {error}") from None
            checked.append(RigCamera(camera.intrinsics, mount))
        object.__setattr__(self, "cameras", tuple(checked))

    @classmethod
    def single(cls, intrinsics: Intrinsics) -> Rig:
        """One camera at the body (identity mount): what a step without a rig is."""
        return cls((RigCamera(intrinsics),))

    @classmethod
    def of(cls, cameras: Sequence[tuple[Intrinsics, Pose | np.ndarray]]) -> Rig:
        """From ``(intrinsics, mount)`` pairs."""
        return cls(tuple(RigCamera(intrinsics, mount) for intrinsics, mount in cameras))

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def pixels(self) -> int:
        """Pixels one body pose produces: the sum of the cameras' width x height."""
        return sum(c.intrinsics.width * c.intrinsics.height for c in self.cameras)

    def camera_poses(self, body_pose: Pose) -> list[Pose]:
        """Each camera's camera-to-world pose at the body pose ``T_world_body``: ``T_world_body @ T_body_cam``."""
        return [body_pose.compose(camera.mount) for camera in self.cameras]
