"""A anchors' renders of one target view, stacked on the pixels any of them covers: what the learned weaver and its
training read (the heuristic mode computes the same per pixel without keeping it: ``weave.weave_heuristic``, with
this module's ``front_surfaces``, ``front_point`` and ``anchor_view``).

``stack_renders`` gathers, for the P covered pixels of a view, each anchor's colour, depth and coverage, runs the
depth test (``front_surfaces``: the front surface; anchors within ``tolerance_rel * z + tolerance_m`` of it agree
there) and the viewing geometry of each anchor at each pixel's front surface point: the cosine between the ray from
the anchor's camera and the ray from the target camera, and the distances from both cameras to that point. Only the
target *pose* enters; no target image or depth.

**The front surface** is the nearest depth any anchor rendered at the pixel, with one exception for anchors made
from seed frames (captured RGB-D whose poses came from outside, e.g. a tracker): two of them disagree by the
tracker's drift, millimetres to centimetres of pose, so one's foreground edge lands a few pixels off the other's.
Where the most relevant anchor that rendered a pixel (retrieval rank order) is seeded, a less relevant seeded
anchor's nearer surface (beyond the depth tolerance) hides it only if that nearer surface fills a box of
``2 * occluder_radius + 1`` pixels around the pixel (a morphological opening of where it is nearer): a sliver
narrower than the box is drift, and must not replace the most relevant anchor's own view of the pixel; an occluder
the most relevant anchor did not see is wider, and still hides what lies behind it. Generated anchors are made at
the client's poses from views of memory itself, so they do not drift against the rest; with them, and with
``occluder_radius`` 0, every nearer surface counts.
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
    when unknown; ``seeded`` (A,) bool, the anchor was made from a seed frame (a capture whose pose came from
    outside; ``front_surfaces``), or ``None``: none was.
    """

    positions: np.ndarray
    confidences: np.ndarray
    frame_ids: np.ndarray | None = None
    seeded: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.positions)
        for name in ("confidences", "frame_ids", "seeded"):
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
    nothing); ``front`` (P,) float32 the front surface's depth (``front_surfaces``); ``agree`` (A, P) bool, the
    anchor is within the depth tolerance of the front surface; ``cos`` (A, P) float32, cosine of the angle at the
    front surface point between the anchor's ray and the target's ray; ``dist_anchor`` (A, P) and ``dist_target``
    (P,) float32 metres from each camera to that point. ``shape`` is the view's (H, W).
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
    occluder_radius: int = 0,
    seeded: np.ndarray | None = None,
) -> WeaveStack:
    """Stack ``renders`` (each anchor at camera-to-world ``pose``, most relevant first) on the covered pixels;
    ``positions`` (A, 3) are the anchors' camera centres in world metres; ``occluder_radius`` (pixels) and
    ``seeded`` (A,) bool (``None``: none) as in ``front_surfaces``. Needs at least one render."""
    inputs = kernel_inputs(renders, positions, pose, intrinsics, tolerance_rel, tolerance_m, occluder_radius, seeded)
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
                  tolerance_rel: float, tolerance_m: float, occluder_radius: int,
                  seeded: np.ndarray | None) -> tuple:
    """The leading arguments of the kernels that weave A ``renders`` of the view at camera-to-world ``pose`` (the
    stack's here, the heuristic one-pass weave's in ``weave``): the covered pixels (int64 flat indices, any render
    covers them), the renders' depth, mask, colour and confidence stacked (A, H*W[, 3]), the front surface (H*W,)
    (``front_surfaces`` with ``occluder_radius`` and ``seeded``), the depth tolerance
    (1 + ``tolerance_rel``, ``tolerance_m``), the pinhole parameters (float32) and width, the target's rotation
    (float32) and the target camera's offset from each anchor's camera centre (``positions`` (A, 3), world metres;
    float32 (A, 3))."""
    count = len(renders)
    depth_all = stacked([r.depth for r in renders]).reshape(count, -1)
    mask_all = stacked([r.mask for r in renders]).reshape(count, -1)
    scale, margin = np.float32(1.0 + tolerance_rel), np.float32(tolerance_m)
    return (
        np.flatnonzero(mask_all.any(axis=0)), depth_all, mask_all,
        stacked([r.rgb for r in renders]).reshape(count, -1, 3),
        stacked([r.confidence for r in renders]).reshape(count, -1).astype(np.float32, copy=False),
        front_surfaces(depth_all, mask_all, intrinsics.height, intrinsics.width, scale, margin, occluder_radius,
                       seeded),
        scale, margin, np.float32(intrinsics.fx),
        np.float32(intrinsics.fy), np.float32(intrinsics.cx), np.float32(intrinsics.cy), intrinsics.width,
        np.ascontiguousarray(pose.rotation, np.float32),
        (pose.position - np.asarray(positions, np.float64).reshape(-1, 3)).astype(np.float32),
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stack_kernel(first, stop, pixels, depth_all, mask_all, rgb_all, confidence_all, front_all, tolerance_scale,
                  tolerance_m, fx, fy, cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front, agree,
                  cos, dist_anchor, dist_target):
    """Fill the stack's arrays at stacked pixels ``first .. stop - 1`` of ``pixels`` (float32 throughout, as
    ``stack_renders`` documents): a pass over the pixels for the front surface and its point, then one pass per
    anchor, so each writes its rows in order. Each pixel's values depend on that pixel alone."""
    count = depth_all.shape[0]
    point = np.empty((stop - first, 3), np.float32)  # the front point's offset from the target camera, world axes
    for j in range(first, stop):
        front[j] = front_all[pixels[j]]
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


def front_surfaces(depth_all: np.ndarray, mask_all: np.ndarray, height: int, width: int, tolerance_scale: np.float32,
                   tolerance_m: np.float32, occluder_radius: int, seeded: np.ndarray | None = None) -> np.ndarray:
    """(H*W,) float32 front depth (metres; inf where no anchor rendered) of A renders' ``depth_all`` / ``mask_all``
    (A, H*W, most relevant first), as the module docstring's "front surface" says, ``seeded`` (A,) bool marking the
    anchors made from seed frames (``None``: none). "Nearer" is ``z * tolerance_scale + tolerance_m`` below the
    depth of the pixel's most relevant rendering anchor; pixels outside the view count as not nearer in the
    opening, so an occluder that enters at the view's edge keeps its edge."""
    if occluder_radius < 0:
        raise InvalidInputError(f"occluder_radius must be >= 0, got {occluder_radius}")
    count = len(depth_all)
    seeded = np.zeros(count, bool) if seeded is None else np.asarray(seeded, bool)
    if seeded.shape != (count,):
        raise InvalidInputError(f"seeded needs one flag per anchor: {seeded.shape[0]} for {count} anchors")
    front = np.empty(depth_all.shape[1], np.float32)
    if occluder_radius == 0 or seeded.sum() < 2:  # no two anchors that drift against each other
        _nearest_kernel(depth_all, mask_all, front)
    else:
        _front_kernel(depth_all, mask_all, height, width, tolerance_scale, tolerance_m, occluder_radius, seeded,
                      front)
    return front


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nearest_kernel(depth_all, mask_all, front):
    """Write the nearest depth any of the renders' ``depth_all`` / ``mask_all`` (A, H*W) has into ``front`` (H*W,)
    (inf where none), anchor by anchor, each a stream."""
    front[:] = np.inf
    for a in range(depth_all.shape[0]):
        for p in range(depth_all.shape[1]):
            if mask_all[a, p] and depth_all[a, p] < front[p]:
                front[p] = depth_all[a, p]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _front_kernel(depth_all, mask_all, height, width, tolerance_scale, tolerance_m, radius, seeded, front):
    """Write ``front_surfaces``' front into ``front`` (H*W,): the most relevant rendering anchor's depth, then,
    anchor by anchor, its nearer surface where it is nearer: at once where it or that anchor is not seeded, and
    where the opened mask of "nearer" holds where both are (nearest first where several anchors are nearer)."""
    count, size = depth_all.shape
    front[:] = np.inf
    top_seeded = np.zeros(size, np.uint8)  # the pixel's most relevant rendering anchor is seeded
    for a in range(count):  # anchor by anchor, each a stream; a pixel's first rendering anchor sets it
        flag = np.uint8(1) if seeded[a] else np.uint8(0)  # uint8 throughout: the compiler vectorises the loop
        for p in range(size):
            first = np.uint8(mask_all[a, p]) & np.uint8(front[p] == np.inf)
            front[p] = depth_all[a, p] if first else front[p]
            top_seeded[p] = top_seeded[p] | (first & flag)
    top = front.copy()
    nearer = np.zeros(size, np.uint8)
    scratch = np.zeros(size, np.uint8)
    counts = np.zeros(width, np.int32)
    row_counts = np.zeros(height, np.int64)
    full = 2 * radius + 1
    for a in range(1, count):
        drifts = np.uint8(1) if seeded[a] else np.uint8(0)
        for y in range(height):
            row = y * width
            total = 0
            for x in range(width):  # branch-free, so the compiler vectorises it
                p = row + x
                is_nearer = mask_all[a, p] & (depth_all[a, p] * tolerance_scale + tolerance_m < top[p])
                z = depth_all[a, p] if is_nearer & ((drifts & top_seeded[p]) == 0) else np.float32(np.inf)
                front[p] = min(front[p], z)  # no drift between the two: nearer hides, as in _nearest_kernel
                nearer[p] = is_nearer & drifts & top_seeded[p]
                total += nearer[p]
            row_counts[y] = total
        # Only a row whose 2r + 1 rows around each hold a box's width of nearer pixels can keep any after erosion;
        # drift slivers usually leave none, and then nothing more is done for this anchor.
        first_row, last_row = -1, -1
        for y in range(radius, height - radius):
            solid = True
            for v in range(y - radius, y + radius + 1):
                if row_counts[v] < full:
                    solid = False
                    break
            if solid:
                last_row = y
                if first_row < 0:
                    first_row = y
        if first_row < 0:
            continue
        start, stop = first_row - radius, last_row + radius + 1  # the rows the opening can touch
        # Erode (the box fits inside), then dilate (the boxes that fit, whole); drift alone leaves nothing to dilate.
        if not _box_filter(nearer, scratch, counts, start, stop, width, radius, True):
            continue
        _box_filter(nearer, scratch, counts, start, stop, width, radius, False)
        for p in range(start * width, stop * width):
            if nearer[p] and depth_all[a, p] < front[p]:
                front[p] = depth_all[a, p]


@numba.njit(cache=True, nogil=True)
def _box_filter(values, scratch, counts, start, stop, width, radius, erode):
    """Erode (every pixel of the box set) or dilate (any pixel set), in place, rows ``start .. stop - 1`` of the
    (H*W,) uint8 0/1 ``values`` (W wide) by a ``2 * radius + 1`` box, as if the rest of the image were 0: along rows
    into ``scratch`` (H*W,), then down the columns with running ``counts`` (W,) int32, row by row. Returns whether
    any pixel of those rows is set after."""
    full = 2 * radius + 1
    for y in range(start, stop):
        row = y * width
        total = 0
        for x in range(min(radius, width)):
            total += values[row + x]
        for x in range(width):
            if x + radius < width:
                total += values[row + x + radius]
            if x - radius - 1 >= 0:
                total -= values[row + x - radius - 1]
            scratch[row + x] = (total == full) if erode else (total > 0)
    counts[:] = 0
    for y in range(start, min(start + radius, stop)):
        for x in range(width):
            counts[x] += scratch[y * width + x]
    any_set = 0
    for y in range(start, stop):
        if y + radius < stop:
            add = (y + radius) * width
            for x in range(width):
                counts[x] += scratch[add + x]
        if y - radius - 1 >= start:
            drop = (y - radius - 1) * width
            for x in range(width):
                counts[x] -= scratch[drop + x]
        row = y * width
        for x in range(width):
            values[row + x] = (counts[x] == full) if erode else (counts[x] > 0)
            any_set += values[row + x]
    return any_set > 0


@numba.njit(cache=True, nogil=True, inline="always")
def front_point(p, nearest, width, fx, fy, cx, cy, rotation):
    """The front surface point at flat pixel ``p`` (front depth ``nearest``): its offset from the target camera
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
    depth when each is within the tolerance (``tolerance_scale`` = 1 + the relative part, ``tolerance_m``) of the
    other: not behind it, and not in front of it (a drift sliver the front surface test passed over)."""
    return present and z <= front * tolerance_scale + tolerance_m and front <= z * tolerance_scale + tolerance_m


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
def _stack_bands(bands, pixels, depth_all, mask_all, rgb_all, confidence_all, front_all, tolerance_scale, tolerance_m,
                 fx, fy, cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front, agree, cos, dist_anchor,
                 dist_target):
    """``_stack_kernel`` for the bands of stacked pixels ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _stack_kernel(bands[t], bands[t + 1], pixels, depth_all, mask_all, rgb_all, confidence_all, front_all,
                      tolerance_scale,
                      tolerance_m, fx, fy, cx, cy, width, rotation, offsets, rgb, depth, mask, confidence, front,
                      agree, cos, dist_anchor, dist_target)
