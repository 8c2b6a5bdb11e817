"""Regions of world space used by edits, dynamic boxes and crops: axis-aligned box, oriented box, sphere.

All coordinates are world metres. ``contains`` takes (N, 3) points as a torch tensor or numpy array and returns a
(N,) boolean of the same kind; boundaries count as inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import check_rotation


def _vector(name: str, values, length: int = 3) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (length,) or not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} must be {length} finite numbers, got {values!r}")
    return array


def _as_tensor(points) -> tuple[torch.Tensor, bool]:
    if isinstance(points, torch.Tensor):
        return points, False
    return torch.from_numpy(np.asarray(points, dtype=np.float64).reshape(-1, 3)), True


def _result(inside: torch.Tensor, was_numpy: bool):
    return inside.numpy() if was_numpy else inside


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[min_m, max_m]`` in world metres."""

    min_m: np.ndarray
    max_m: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = _vector("box min", self.min_m), _vector("box max", self.max_m)
        if np.any(lo > hi):
            raise InvalidInputError(f"box min {lo.tolist()} exceeds max {hi.tolist()} on some axis")
        object.__setattr__(self, "min_m", lo)
        object.__setattr__(self, "max_m", hi)

    def contains(self, points):
        pts, was_numpy = _as_tensor(points)
        lo = torch.as_tensor(self.min_m, dtype=pts.dtype, device=pts.device)
        hi = torch.as_tensor(self.max_m, dtype=pts.dtype, device=pts.device)
        return _result(((pts >= lo) & (pts <= hi)).all(dim=1), was_numpy)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of an axis-aligned box enclosing the region, metres."""
        return self.min_m, self.max_m


@dataclass(frozen=True)
class OrientedBox:
    """Box with centre, half extents along its own axes, and rotation (columns = box axes in world)."""

    center_m: np.ndarray
    half_extents_m: np.ndarray
    rotation: np.ndarray

    def __post_init__(self) -> None:
        half = _vector("oriented box half extents", self.half_extents_m)
        if np.any(half < 0):
            raise InvalidInputError(f"oriented box half extents must be >= 0, got {half.tolist()}")
        rotation = np.asarray(self.rotation, dtype=np.float64)
        check_rotation(rotation, "oriented box rotation")
        object.__setattr__(self, "center_m", _vector("oriented box centre", self.center_m))
        object.__setattr__(self, "half_extents_m", half)
        object.__setattr__(self, "rotation", rotation)

    def contains(self, points):
        pts, was_numpy = _as_tensor(points)
        center = torch.as_tensor(self.center_m, dtype=pts.dtype, device=pts.device)
        rotation = torch.tensor(self.rotation, dtype=pts.dtype, device=pts.device)
        half = torch.as_tensor(self.half_extents_m, dtype=pts.dtype, device=pts.device)
        local = (pts - center) @ rotation
        return _result((local.abs() <= half).all(dim=1), was_numpy)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = np.abs(self.rotation) @ self.half_extents_m
        return self.center_m - reach, self.center_m + reach


@dataclass(frozen=True)
class Sphere:
    """Ball of ``radius_m`` around ``center_m`` (world metres)."""

    center_m: np.ndarray
    radius_m: float

    def __post_init__(self) -> None:
        radius = float(self.radius_m)
        if not np.isfinite(radius) or radius < 0:
            raise InvalidInputError(f"sphere radius must be a finite number >= 0, got {self.radius_m!r}")
        object.__setattr__(self, "center_m", _vector("sphere centre", self.center_m))
        object.__setattr__(self, "radius_m", radius)

    def contains(self, points):
        pts, was_numpy = _as_tensor(points)
        center = torch.as_tensor(self.center_m, dtype=pts.dtype, device=pts.device)
        return _result(((pts - center) ** 2).sum(dim=1) <= self.radius_m**2, was_numpy)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center_m - self.radius_m, self.center_m + self.radius_m


Region = Union[Box, OrientedBox, Sphere]
"""Any region an edit, a dynamic-object box or a crop accepts."""
