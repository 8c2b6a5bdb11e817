"""Request limits and the work budget: ``ServerLimits`` (what the handshake's ``Limits`` and ``docs/limits.md``
state), the check every request's cost goes through before any work, and the split of long work into chunks.

A request's cost is computed from its shape alone (rays x reach, shape volume, query counts, poses x pixels) once it
is decoded, before the world's lock is taken, so a request over a limit is refused before any of its work, whatever
it asks for. Work within its budget that still runs long is split into chunks (``chunk_parts``) between which it
checks whether its call is still wanted (``scheduling.checkpoint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.worldweave.v1 import world_pb2 as pb

MIB = 1 << 20


@dataclass(frozen=True)
class ServerLimits:
    """Request limits, reported in the handshake (``Limits``, the same field names) and listed in
    ``docs/limits.md``. ``max_message_bytes`` is set on the server's channel and must be set on clients' channels
    too (a raw 1920x1080 RGB frame is 6.2 MB; with float16 depth 10.4 MB). Every limit is per call."""

    max_poses_per_call: int = 64
    """Most poses in one Render or StepRequest."""
    max_message_bytes: int = 128 * MIB
    """Largest message either side sends, bytes."""
    max_seed_frames: int = 64
    """Most seed frames in CreateWorld."""
    max_pixels_per_call: int = 1 << 25
    """Most pixels one Render or one StepRequest produces: poses x width x height (16 frames of 1920x1080)."""
    max_query_items: int = 1 << 21
    """Most rays, points or shapes in one Raycast, NearestSurface, CheckCollision or QueryOccupancy."""
    max_insert_points: int = 1 << 22
    """Most points in one InsertPoints."""
    max_ray_voxels: int = 1 << 32
    """Most ray reach in one Raycast, voxels: rays x each ray's reach (``max_range_m``, capped by the longest
    path through the voxel keys' extent) / the world's voxel size."""
    max_shape_voxels: int = 1 << 34
    """Most collision search volume in one CheckCollision, voxels: the sum over its shapes of the voxels in each
    shape's search box (its axis-aligned bounding box grown by the clearance reach and one voxel)."""
    max_rig_cameras: int = 8
    """Most cameras in one StepRequest's rig (each body pose answers a frame per camera; the pixels of all of them
    count against ``max_pixels_per_call``)."""

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            wire_type = pb.Limits.DESCRIPTOR.fields_by_name[limit.name].cpp_type
            top = (1 << 32) - 1 if wire_type == FieldDescriptor.CPPTYPE_UINT32 else (1 << 64) - 1
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise InvalidInputError(f"ServerLimits.{limit.name} must be an integer from 1 to {top}, got {value!r}")


def limits_message(limits: ServerLimits) -> pb.Limits:
    """``ServerLimits`` -> the handshake's ``Limits`` (field for field)."""
    return pb.Limits(**asdict(limits))


def check_budget(what: str, cost: float, limit: int, name: str, unit: str, hint: str) -> None:
    """Raise ``LimitExceededError`` (RESOURCE_EXHAUSTED) when ``cost`` (in ``unit``) is over ``limit``, naming the
    limit ``name``, the request's cost and ``hint`` (what to send instead). ``what``: the request, e.g. "Raycast"."""
    if cost > limit:
        raise LimitExceededError(
            f"{what} costs {amount(cost)} {unit}, over this server's {name} = {limit} {unit} per call; {hint}"
        )


def amount(value: float) -> str:
    """A cost as a message prints it: whole below 1e15, else to 4 significant digits."""
    return f"{value:.0f}" if value < 1e15 else f"{value:.4g}"


def chunk_parts(costs: np.ndarray, max_cost: float, max_items: int) -> list[slice]:
    """Consecutive slices of ``costs`` (N,) (one per item, >= 0) whose sums stay within ``max_cost`` and whose
    lengths stay within ``max_items``; an item costing more than ``max_cost`` is a part of its own. One empty slice
    when N is 0, so a chunked query still answers with empty arrays."""
    n = len(costs)
    cumulative = np.cumsum(costs, dtype=np.float64)
    parts = []
    start = 0
    while start < n:
        spent = cumulative[start - 1] if start else 0.0
        stop = int(np.searchsorted(cumulative, spent + max_cost, side="right"))
        stop = min(max(stop, start + 1), start + max_items, n)
        parts.append(slice(start, stop))
        start = stop
    return parts or [slice(0, 0)]
