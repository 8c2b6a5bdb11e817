"""Pure conversion between a connection's engine convention and the canonical frame, per kind of value (no network).

Points, directions, lengths and box rotations (:data:`.schema.FIELD_KINDS`), both ways: ``to_canonical`` for
requests (engine -> canonical metres), ``from_canonical`` for replies. Every convention's world axes are a signed
permutation of the canonical ones (``world_to_canonical`` has one +-1 per row; a test checks it), so an engine
axis-aligned box is a canonical axis-aligned box once its corners are re-sorted per axis.
"""

from __future__ import annotations

import numpy as np

from worldweave.proto.errors import InvalidPoseError
from worldweave.proto.geometry import quaternion_from_rotation, rotations_from_quaternions
from worldweave.sim_clients.conventions import Convention
from worldweave.sim_clients.gateway.errors import InvalidMessageError
from worldweave.sim_clients.gateway.schema import FieldKind

COLUMNS: dict[FieldKind, int | None] = {"point": 3, "direction": 3, "length": None, "rotation": 4}
"""Columns of a packed array of each kind (lengths: any shape, scaled element by element)."""


def _box_flip(convention: Convention) -> np.ndarray:
    """``D = diag(det W, 1, 1)``: flipping a box axis leaves the box unchanged and makes its rotation proper."""
    return np.diag([np.sign(np.linalg.det(convention.world_to_canonical)), 1.0, 1.0])


def _quaternions(rotations: np.ndarray) -> np.ndarray:
    return np.array([tuple(quaternion_from_rotation(r)) for r in rotations]).reshape(-1, 4)


def to_canonical(kind: FieldKind, values: np.ndarray, convention: Convention, path: str) -> np.ndarray:
    """Engine values of ``kind`` (rows of 3 or 4, or any shape for lengths) -> canonical float64, metres.

    A box rotation ``R_e`` (box-to-engine-world) becomes ``W R_e D`` (box-to-canonical-world): the box
    ``c + R_e l`` (``|l| <= h``) is ``W c + (W R_e D) l'`` with ``l' = D l``."""
    if kind == "point":
        return convention.points_to_canonical(values)
    if kind == "direction":
        return convention.directions_to_canonical(values)
    if kind == "length":
        return np.asarray(values, dtype=np.float64) * convention.metres_per_unit
    try:
        engine = rotations_from_quaternions(values, path)
    except InvalidPoseError as error:
        raise InvalidMessageError(str(error)) from None
    return _quaternions(convention.world_to_canonical @ engine @ _box_flip(convention))


def from_canonical(kind: FieldKind, values: np.ndarray, convention: Convention) -> np.ndarray:
    """Canonical values of ``kind`` -> engine values (the inverse of :func:`to_canonical`). The conversions are
    linear, so the server's 0 stand-ins for "no point" stay 0 and infinite lengths stay infinite."""
    if kind == "point":
        return convention.points_from_canonical(values)
    if kind == "direction":
        return convention.directions_from_canonical(values)
    if kind == "length":
        return np.asarray(values, dtype=np.float64) / convention.metres_per_unit
    canonical = rotations_from_quaternions(values, "rotations")
    return _quaternions(convention.world_to_canonical.T @ canonical @ _box_flip(convention))


def box_to_canonical(
    min_engine: np.ndarray, max_engine: np.ndarray, convention: Convention, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """An engine axis-aligned box -> the same box's canonical corners (min, max), metres. A ``min`` above ``max`` on
    some engine axis is refused (``path`` names it), as the server refuses it: the corners are never swapped."""
    if np.any(min_engine > max_engine):
        raise InvalidMessageError(f"{path}: min {min_engine.tolist()} exceeds max {max_engine.tolist()} on some axis")
    corners = convention.points_to_canonical(np.stack([min_engine, max_engine]))
    return corners.min(axis=0), corners.max(axis=0)


def box_from_canonical(min_m: np.ndarray, max_m: np.ndarray, convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    """Canonical box corners -> the same box's engine corners (min, max)."""
    corners = convention.points_from_canonical(np.stack([min_m, max_m]))
    return corners.min(axis=0), corners.max(axis=0)
