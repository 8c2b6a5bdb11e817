"""Which pixels a generated frame keeps from memory are seen along a line of sight memory observed.

A pixel kept from memory's render shows a surface memory holds, and its confidence is memory's confidence in that
surface. The space in front of it along this view's ray is another matter: memory knows it free only where some
keyframe saw through it. Where the ray crosses space no keyframe saw through (a wall behind furniture memory never
held, seen from where no camera looked), fusing the pixel would make that space free through whatever stands there
unknown to memory. Such pixels are shown, not fused (``World.step`` gives them confidence 0).

Pixels generated where memory's render showed nothing are not asked: their lines of sight were never observed
(``observed_lines``), so they are fused as surfaces only, making no free space, unless the backend is certain of them.

The rays are asked at a reduced resolution, about ``LINE_OF_SIGHT_RAYS`` per frame: per square block of pixels, the
ray to its farthest kept pixel (the longest, the likeliest to cross unseen space); the block's kept pixels share its
answer.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.queries.world_queries import WorldQueries
from worldweave.proto.geometry import Intrinsics, Pose

LINE_OF_SIGHT_RAYS = 4800
"""Rays asked per frame, about (one per block of pixels; 80 x 60 at 640x480)."""
SPARE_END_SHARE = 0.1
"""The last share of each line of sight, in front of its surface, that is not asked: there the surface's thickness,
and views grazing it, leave space unobserved that is not a gap."""


@numba.njit(cache=True, nogil=True)
def _kept(mask, memory_depth, depth, confidence):
    """bool (H, W): pixels kept from memory (its render covered them with depth) that would be fused."""
    height, width = depth.shape
    kept = np.empty((height, width), np.bool_)
    for v in range(height):
        for u in range(width):
            kept[v, u] = mask[v, u] & (memory_depth[v, u] > 0) & (depth[v, u] > 0) & (confidence[v, u] > 0)
    return kept


@numba.njit(cache=True, nogil=True)
def _farthest_in_blocks(kept, depth, block):
    """For each ``block`` x ``block`` square of bool (H, W) ``kept`` with a kept pixel: the row and column of its
    kept pixel of greatest float32 ``depth`` (the first in row-major order among equals). Returns (N, 2) int64."""
    height, width = depth.shape
    cols = (width + block - 1) // block
    best = np.full(((height + block - 1) // block) * cols, np.float32(-1.0))
    where = np.full(best.shape[0], -1, np.int64)
    for v in range(height):
        for column in range(cols):
            b = (v // block) * cols + column
            top, at = best[b], where[b]  # in registers along the block's row: no store per pixel
            for u in range(column * block, min((column + 1) * block, width)):
                value = depth[v, u] if kept[v, u] else np.float32(-1.0)
                greater = value > top  # selects, not branches: depths compare at random
                at = v * width + u if greater else at
                top = value if greater else top
            best[b], where[b] = top, at
    found = where[where >= 0]
    out = np.empty((len(found), 2), np.int64)
    out[:, 0] = found // width
    out[:, 1] = found % width
    return out


@numba.njit(cache=True, nogil=True)
def _spread_to_blocks(pixels, unseen, kept, block):
    """bool (H, W): the ``kept`` pixels of every ``block`` x ``block`` square whose asked pixel (a row of (N, 2)
    ``pixels``) is ``unseen``."""
    height, width = kept.shape
    out = np.zeros((height, width), np.bool_)
    for i in range(len(pixels)):
        if unseen[i]:
            v0, u0 = pixels[i, 0] // block * block, pixels[i, 1] // block * block
            for v in range(v0, min(v0 + block, height)):
                for u in range(u0, min(u0 + block, width)):
                    out[v, u] = kept[v, u]
    return out


def observed_lines(render: RenderResult, confidence: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels of a generated frame whose line of sight counts as observed (``Anchor.observed``): those
    memory's ``render`` covered with depth (``unseen_kept_pixels`` checks their lines before fusion) and those the
    backend is certain of (``confidence`` 1, float32 (H, W): as sure as an observation). A pixel generated where memory
    showed nothing, at less than certainty, guesses a surface and the empty space in front of it: it is fused as a
    surface only."""
    return render.kept | (np.asarray(confidence) >= 1.0)


def unseen_kept_pixels(queries: WorldQueries, depth: np.ndarray, confidence: np.ndarray, render: RenderResult,
                       pose: Pose, intrinsics: Intrinsics) -> np.ndarray:
    """bool (H, W): the pixels memory's ``render`` covered (mask and depth) that a frame at camera-to-world ``pose``
    would fuse (``depth`` float32 metres > 0, ``confidence`` > 0) whose line of sight crosses space ``queries``' views
    never saw through at the default confidence level (``WorldQueries.crosses_unseen_space``)."""
    if not render.mask.any():  # memory shows nothing here: nothing is kept
        return np.zeros(depth.shape, bool)
    block = max(1, round(math.sqrt(depth.size / LINE_OF_SIGHT_RAYS)))
    depth = np.asarray(depth, np.float32)
    kept = _kept(render.mask, render.depth, depth, np.asarray(confidence, np.float32))
    pixels = _farthest_in_blocks(kept, depth, block)
    if len(pixels) == 0:
        return kept
    v, u = pixels[:, 0], pixels[:, 1]
    z = depth[v, u].astype(np.float64)
    points_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)
    unseen = queries.crosses_unseen_space(pose.position, pose.cam_to_world(points_cam), SPARE_END_SHARE)
    return _spread_to_blocks(pixels, unseen, kept, block)
