"""A anchors' renders of one target view, stacked on the pixels any of them covers: what the learned weaver and its
training read (the heuristic mode computes the same per pixel without keeping it: ``weave.weave_heuristic``, with
this module's ``front_depth``, ``front_point`` and ``anchor_view``).

``stack_renders`` gathers, for the P covered pixels of a view, each anchor's colour, depth and coverage, runs the
depth test (the nearest depth any anchor rendered is the front surface; anchors within ``tolerance_rel * z +
tolerance_m`` of it agree there) and the viewing geometry of each anchor at each pixel's front surface point: the
cosine between the ray from the anchor's camera and the ray from the target camera, and the distances from both
cameras to that point. Only the target *pose* enters; no target image or depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from worldweave.bridge.cores import split_call
from worldweave.bridge.frames import RenderResult
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose


@dataclass(frozen=True)
class AnchorFacts:
    """What the weaver knows about each of A retrieved anchors, most relevant first (row a has retrieval rank a).

    ``positions`` (A, 3) float64 camera centres, world metres; ``confidences`` (A,) in (0, 1], the anchor's weight
    as fused; ``frame_ids`` (A,) int64 ids of the frames the anchors were made from (larger = newer), or ``None``
    when unknown.
    """

    positions: np.ndarray
    confidences: np.ndarray
    frame_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.positions)
        for name in ("confidences", "frame_ids"):
            value = getattr(self, name)
            if value is not None and len(value) != count:
                raise InvalidInputError(f"anchor facts: {len(value)} {name} for {count} anchor positions")

    def __len__(self) -> int:
        return len(self.positions)

    def recency(self) -> np.ndarray:
        """(A,) float32 in [0, 1]: 1 for the newest retrieved anchor, 0 for the oldest (0.5 each when unknown)."""
        count = len(self)
        if self.frame_ids is None or count < 2:
            return np.full(count, 0.5, np.float32)
        order = np.argsort(np.argsort(np.asarray(self.frame_ids), kind="stable"), kind="stable")
        return (order / (count - 1)).astype(np.float32)


@dataclass(frozen=True)
class WeaveStack:
    """A renders of a view stacked on its P covered pixels (any anchor rendered them).

    ``pixels`` (P,) int64 flat pixel indices (row-major in an (H, W) image); ``rgb`` (A, P, 3) float32 0..255;
    ``depth`` (A, P) float32 metres (0 where the anchor has nothing); ``mask`` (A, P) bool, the anchor rendered the
    pixel; ``confidence`` (A, P) float32 in [0, 1], the rendered confidence of the anchor's points (0 where it has
    nothing); ``front`` (P,) float32 the nearest rendered depth; ``agree`` (A, P) bool, the anchor is within the depth
    tolerance of the front surface; ``cos`` (A, P) float32, cosine of the angle at the front surface point between
    the anchor's ray and the target's ray; ``dist_anchor`` (A, P) and ``dist_target`` (P,) float32 metres from each
    camera to that point. ``shape`` is the view's (H, W).
    """

    pixels: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray
    front: np.ndarray
    agree: np.ndarray
    cos: np.ndarray
    dist_anchor: np.ndarray
    dist_target: np.ndarray
    shape: tuple[int, int]

    @property
    def count(self) -> int:
        """A, the number of anchors."""
        return len(self.rgb)

    def subset(self, keep: np.ndarray) -> WeaveStack:
        """The stack on the pixels where bool (P,) ``keep`` holds."""
        return WeaveStack(
            self.pixels[keep], self.rgb[:, keep], self.depth[:, keep], self.mask[:, keep], self.confidence[:, keep],
            self.front[keep],
            self.agree[:, keep], self.cos[:, keep], self.dist_anchor[:, keep], self.dist_target[keep], self.shape,
        )


def check_renders(renders: Sequence[RenderResult], facts: AnchorFacts, intrinsics: Intrinsics) -> None:
    """Raise ``InvalidInputError`` unless there is one fact row per render and every render has the view's shape."""
    if len(facts) != len(renders):
        raise InvalidInputError(
            f"weave needs one camera position and confidence per render: {len(renders)} renders, {len(facts)} "
            f"positions, {len(facts.confidences)} confidences"
        )
    for i, render in enumerate(renders):
        if render.mask.shape != intrinsics.shape:
            raise InvalidInputError(f"render {i} has shape {render.mask.shape}, intrinsics say {intrinsics.shape}")


def stack_renders(
    renders: Sequence[RenderResult],
    positions: np.ndarray,
    pose: Pose,
    intrinsics: Intrinsics,
    tolerance_rel: float,
    tolerance_m: float,
) -> WeaveStack:
    """Stack ``renders`` (each anchor at camera-to-world ``pose``) on the covered pixels; ``positions`` (A, 3) are the
    anchors' camera centres in world metres. Needs at least one render."""
    inputs = kernel_inputs(renders, positions, pose, intrinsics, tolerance_rel, tolerance_m)
    count, size = len(renders), len(inputs[0])
    rgb = np.empty((count, size, 3), np.float32)
    depth = np.empty((count, size), np.float32)
    mask = np.empty((count, size), bool)
    confidence = np.empty((count, size), np.float32)
    agree = np.empty((count, size), bool)
    cos = np.empty((count, size), np.float32)
    dist_anchor = np.empty((count, size), np.float32)
    front = np.empty(size, np.float32)
    dist_target = np.empty(size, np.float32)
    split_call(_stack_kernel, _stack_bands, size, *inputs, rgb, depth, mask, confidence, front, agree, cos,
               dist_anchor, dist_target)  # each pixel's values depend on that pixel alone
    return WeaveStack(inputs[0], rgb, depth, mask, confidence, front, agree, cos, dist_anchor, dist_target,
                      intrinsics.shape)


def stacked(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)`` (at least one array), without the copy when the arrays already are the rows 0, 1, ... of
    one C-contiguous array that owns its memory, in order (``SpatialMemory.render_anchors`` renders its anchors into
    one stack made by ``np.empty``)."""
    base = arrays[0].base
    if (isinstance(base, np.ndarray) and base.flags.c_contiguous and base.shape == (len(arrays), *arrays[0].shape)
            and base.dtype == arrays[0].dtype
            and all(a.base is base and a.ctypes.data == base[i].ctypes.data and a.flags.c_contiguous
                    for i, a in enumerate(arrays))):
        return base
    return np.stack(arrays)


def kernel_inputs(renders: Sequence[RenderResult], positions: np.ndarray, pose: Pose, intrinsics: Intrinsics,
                  tolerance_rel: float, tolerance_m: float) -> tuple:
    """The leading arguments of the kernels that weave A ``renders`` of the view at camera-to-world ``pose`` (the
    stack's here, the heuristic one-pass weave's in ``weave``): the covered pixels (int64 flat indices, any render
    covers them), the renders' depth, mask, colour and confidence stacked (A, H*W[, 3]), the depth tolerance
    (1 + ``tolerance_rel``, ``tolerance_m``), the pinhole parameters (float32) and width, the target's rotation
    (float32) and the target camera's offset from each anchor's camera centre (``positions`` (A, 3), world metres;
    float32 (A, 3))."""
    count = len(renders)
    depth_all = stacked([r.depth for r in renders]).reshape(count, -1)
    mask_all = stacked([r.mask for r in renders]).reshape(count, -1)
    return (
        np.flatnonzero(mask_all.any(axis=0)), depth_all, mask_all,
        stacked([r.rgb for r in renders]).reshape(count, -1, 3),
        stacked([r.confidence for r in renders]).reshape(count, -1).astype(np.float32, copy=False),
        np.float32(1.0 + tolerance_rel), np.float32(tolerance_m), np.float32(intrinsics.fx),
        np.float32(intrinsics.fy), np.float32(intrinsics.cx), np.float32(intrinsics.cy), intrinsics.width,
        np.ascontiguousarray(pose.rotation, np.float32),
        (pose.position - np.asarray(positions, np.float64).reshape(-1, 3)).astype(np.float32),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stack_kernel(first, stop, pixels, depth_all, mask_all, rgb_all, confidence_all, tolerance_scale, tolerance_m, fx,
                  fy, cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front, agree, cos, dist_anchor,
                  dist_target):
    """Fill the stack's arrays at stacked pixels ``first .. stop - 1`` of ``pixels`` (float32 throughout, as
    ``stack_renders`` documents): a pass over the pixels for the front surface and its point, then one pass per
    anchor, so each writes its rows in order. Each pixel's values depend on that pixel alone."""
    count = depth_all.shape[0]
    point = np.empty((stop - first, 3), np.float32)  # the front point's offset from the target camera, world axes
    for j in range(first, stop):
        front[j] = front_depth(pixels[j], depth_all, mask_all)
        tx, ty, tz, dist_target[j] = front_point(pixels[j], front[j], width, fx, fy, cx, cy, rotation)
        point[j - first, 0], point[j - first, 1], point[j - first, 2] = tx, ty, tz
    for a in range(count):
        ox, oy, oz = offsets[a, 0], offsets[a, 1], offsets[a, 2]
        for j in range(first, stop):
            p = pixels[j]
            present = mask_all[a, p]
            z = depth_all[a, p]
            mask[a, j] = present
            depth[a, j] = z
            confidence[a, j] = confidence_all[a, p]
            for c in range(3):
                rgb[a, j, c] = np.float32(rgb_all[a, p, c])
            agree[a, j] = agrees(present, z, front[j], tolerance_scale, tolerance_m)
            dist_anchor[a, j], cos[a, j] = anchor_view(point[j - first, 0], point[j - first, 1], point[j - first, 2],
                                                       dist_target[j], ox, oy, oz)


@numba.njit(cache=True, nogil=True, inline="always")
def front_depth(p, depth_all, mask_all):
    """At flat pixel ``p`` of A renders' ``depth_all`` / ``mask_all`` (A, H*W): the front depth, the nearest any
    anchor rendered (float32 metres)."""
    nearest = np.float32(np.inf)
    for a in range(depth_all.shape[0]):
        z = depth_all[a, p]
        if mask_all[a, p] and z < nearest:
            nearest = z
    return nearest


@numba.njit(cache=True, nogil=True, inline="always")
def front_point(p, nearest, width, fx, fy, cx, cy, rotation):
    """The front surface point at flat pixel ``p`` (``front_depth`` ``nearest``): its offset from the target camera
    (x, y, z, world axes; ``rotation`` is the target's camera-to-world rotation) and its length (metres, at least
    1e-9)."""
    x = (np.float32(p % width) - cx) / fx * nearest
    y = (np.float32(p // width) - cy) / fy * nearest
    z = nearest
    tx = x * rotation[0, 0] + y * rotation[0, 1] + z * rotation[0, 2]
    ty = x * rotation[1, 0] + y * rotation[1, 1] + z * rotation[1, 2]
    tz = x * rotation[2, 0] + y * rotation[2, 1] + z * rotation[2, 2]
    return tx, ty, tz, max(np.sqrt(tx * tx + ty * ty + tz * tz), np.float32(1e-9))


@numba.njit(cache=True, nogil=True, inline="always")
def agrees(present, z, front, tolerance_scale, tolerance_m):
    """The depth test: an anchor that rendered the pixel (``present``) at depth ``z`` agrees with the ``front``
    depth when ``z`` is within the tolerance (``tolerance_scale`` = 1 + the relative part, ``tolerance_m``)."""
    return present and z <= front * tolerance_scale + tolerance_m


@numba.njit(cache=True, nogil=True, inline="always")
def anchor_view(tx, ty, tz, to_target, ox, oy, oz):
    """One anchor's view of a front point at offset (``tx``, ``ty``, ``tz``) from the target camera, ``to_target``
    metres away, the target's camera at offset (``ox``, ``oy``, ``oz``) from the anchor's (world axes): the distance
    from the anchor's camera to the point (metres, at least 1e-9) and the cosine between the two cameras' rays."""
    ax = tx + ox
    ay = ty + oy
    az = tz + oz
    to_anchor = max(np.sqrt(ax * ax + ay * ay + az * az), np.float32(1e-9))
    return to_anchor, min(max((ax * tx + ay * ty + az * tz) / (to_anchor * to_target), np.float32(-1.0)),
                          np.float32(1.0))


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _stack_bands(bands, pixels, depth_all, mask_all, rgb_all, confidence_all, tolerance_scale, tolerance_m, fx, fy,
                 cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front, agree, cos, dist_anchor,
                 dist_target):
    """``_stack_kernel`` for the bands of stacked pixels ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _stack_kernel(bands[t], bands[t + 1], pixels, depth_all, mask_all, rgb_all, confidence_all, tolerance_scale,
                      tolerance_m, fx, fy, cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front,
                      agree, cos, dist_anchor, dist_target)
