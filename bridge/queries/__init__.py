"""Spatial queries against the generated world: raycast, nearest surface, collision, occupancy, crop.

``WorldQueries`` is the entry point; the modules beside it each do one job: ``grid`` (sparse block-hashed copy
of the surface), ``distance_field`` (the field and nearest-surface search), ``raycast``, ``collision``,
``occupancy`` (free / unknown from keyframe depth).
"""

from worldweave.bridge.queries.collision import ContactResult
from worldweave.bridge.queries.distance_field import NearestResult
from worldweave.bridge.queries.occupancy import DepthView, Occupancy
from worldweave.bridge.queries.world_queries import (
    CropResult,
    RayHits,
    SyncStats,
    ViewSource,
    WorldQueries,
    resolve_level,
)

__all__ = [
    "ContactResult",
    "CropResult",
    "DepthView",
    "NearestResult",
    "Occupancy",
    "RayHits",
    "SyncStats",
    "ViewSource",
    "WorldQueries",
    "resolve_level",
]
