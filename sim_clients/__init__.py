"""The worldweave client SDK: connect to a server, step and render worlds, query and edit their memory.

    from worldweave.sim_clients import WorldClient, box_region
    with WorldClient("127.0.0.1:50051") as client:
        world = client.worlds.create(seed_frames, intrinsics)
        frames = client.step(world.world_id, c2w)
        client.edits.remove_region(world.world_id, box_region([0, -1, 0], [2, 1, 2]))

The names below load on first use, so that importing one module of the package (``conventions``, the gateway's
``engine_client``) does not load grpc. ``Pose``, ``Intrinsics`` and the errors are in ``worldweave.proto``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = ("client", "aio_client", "retry", "mirror", "conversions", "world_state", "conventions", "rigs")
"""The modules of this package that define the names of ``__all__``."""
__all__ = [
    "OCCUPANCY_NAMES", "SOURCE_NAMES", "AsyncWorldClient", "ClientOptions", "CollisionResult", "Convention",
    "CropResult", "DepthEncoding", "EditResult", "Frame", "ImageEncoding", "IncompatibleServerError", "MirrorError",
    "NearestSurfaceResult", "OccupancyResult", "PointCloudChunk", "PointCloudMirror", "RaycastResult", "Retrieval",
    "RetryPolicy", "Rig", "RigCamera", "WorldClient", "box_region", "get_convention", "oriented_box_region",
    "sphere_region", "stereo_rig",
]

if TYPE_CHECKING:
    from worldweave.sim_clients.aio_client import AsyncWorldClient
    from worldweave.sim_clients.client import ClientOptions, IncompatibleServerError, WorldClient
    from worldweave.sim_clients.conventions import Convention, get_convention
    from worldweave.sim_clients.conversions import DepthEncoding, Frame, ImageEncoding, Retrieval
    from worldweave.sim_clients.mirror import MirrorError, PointCloudMirror
    from worldweave.sim_clients.retry import RetryPolicy
    from worldweave.sim_clients.rigs import Rig, RigCamera, stereo_rig
    from worldweave.sim_clients.world_state import (
        OCCUPANCY_NAMES,
        SOURCE_NAMES,
        CollisionResult,
        CropResult,
        EditResult,
        NearestSurfaceResult,
        OccupancyResult,
        PointCloudChunk,
        RaycastResult,
        box_region,
        oriented_box_region,
        sphere_region,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            loaded = importlib.import_module(f"worldweave.sim_clients.{module}")
            if name in vars(loaded):
                return vars(loaded)[name]
    raise AttributeError(f"module 'worldweave.sim_clients' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
