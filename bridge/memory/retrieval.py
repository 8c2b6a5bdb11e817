"""Which anchors condition a chunk of N target views, behind one interface.

Every mode is a ``Retriever`` whose ``select(index, poses, intrinsics, k)`` returns rows of an ``AnchorIndex``, most
relevant first, at most ``k``:

* ``coverage`` (AnchorWeave): frustum pre-filter, then greedy set cover of the chunk's coarse cell grid (one
  ``SKETCH_GRID`` per target view); each step takes the anchor that adds the most not-yet-covered cells, each
  weighted by the share of the anchor's own view that lands in that target view (so a view *of* the chunk beats a
  wide far view that merely contains it), and it stops at ``k`` or when the best anchor adds fewer than
  ``min_gain`` of the chunk's cells.
* ``iou`` (Spatia): for each candidate and target view, the IoU of what the anchor sees and what the view sees,
  measured on the coarse grids; anchors whose best IoU over the chunk reaches ``iou_epsilon``, top ``k`` by IoU.
* ``recent``: the ``k`` newest anchors. ``random``: ``k`` anchors drawn uniformly from the whole store (seeded).
* ``global``: no anchors (the caller renders the global voxel map instead).

Coverage of a target cell is measured by projecting each candidate's sketch (a coarse depth point per cell of its
own view, see ``anchors.sketch_depth``) into the target's grid, each point covering the cells its footprint spans,
with a coarse z-test: an anchor covers a cell only where its depth is within ``occlusion_tolerance`` of the nearest
candidate depth there, so an anchor behind a wall does not count as seeing the room beyond it. Only target poses
enter retrieval; no target image or depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numba
import numpy as np

from worldweave.bridge.memory.anchors import (
    SKETCH_GRID,
    Anchor,
    AnchorIndex,
    AnchorStore,
)
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

RetrievalMode = Literal["coverage", "iou", "recent", "random", "global"]
RETRIEVAL_MODES: tuple[str, ...] = ("coverage", "iou", "recent", "random", "global")

_NEAR_M = 0.05
_MAX_CELL_RADIUS = 3


@dataclass(frozen=True)
class RetrievalOptions:
    """Tuning of the geometric retrieval modes."""

    min_gain: float = 0.01
    """``coverage`` stops when the best remaining anchor adds fewer than this fraction of the chunk's cells."""
    iou_epsilon: float = 0.1
    """``iou`` keeps anchors whose IoU with some target view is at least this (Spatia's threshold epsilon)."""
    occlusion_tolerance: float = 0.1
    """An anchor covers a cell when its depth there is at most ``(1 + this)`` times the nearest candidate depth."""
    max_candidates: int = 64
    """At most this many frustum candidates are projected; beyond, the ones nearest the chunk's poses are kept
    (camera distance in metres plus 0.5 m per radian of viewing-direction difference)."""
    max_range_m: float = 20.0
    """Far plane of the frustum pre-filter, metres."""

    def __post_init__(self) -> None:
        if not (0 <= self.min_gain <= 1 and 0 <= self.iou_epsilon <= 1 and self.occlusion_tolerance >= 0):
            raise InvalidInputError(
                f"need 0 <= min_gain <= 1, 0 <= iou_epsilon <= 1, occlusion_tolerance >= 0; got {self.min_gain}, "
                f"{self.iou_epsilon}, {self.occlusion_tolerance}"
            )
        if not (self.max_candidates >= 1 and self.max_range_m > _NEAR_M):
            raise InvalidInputError(
                f"need max_candidates >= 1 and max_range_m > {_NEAR_M}; got {self.max_candidates}, {self.max_range_m}"
            )


def _check_chunk(poses: Sequence[Pose], k: int) -> None:
    if len(poses) == 0:
        raise InvalidInputError("retrieval needs at least one target pose")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise InvalidInputError(f"k (anchors per chunk) must be a positive integer, got {k!r}")


def frustum_candidates(index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics,
                       options: RetrievalOptions) -> np.ndarray:
    """Rows of anchors whose sketch bounding sphere meets some target view's frustum (near 5 cm, far
    ``max_range_m``), capped at ``max_candidates`` by nearness of pose. Sorted ascending."""
    if len(index) == 0:
        return np.zeros(0, np.int64)
    # Inward plane normals of the frustum in the camera frame: x >= a z, x <= b z, y >= c z, y <= d z.
    a = (-0.5 - intrinsics.cx) / intrinsics.fx
    b = (intrinsics.width - 0.5 - intrinsics.cx) / intrinsics.fx
    c = (-0.5 - intrinsics.cy) / intrinsics.fy
    d = (intrinsics.height - 0.5 - intrinsics.cy) / intrinsics.fy
    normals = np.array([[1, 0, -a], [-1, 0, b], [0, 1, -c], [0, -1, d], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    offsets = np.array([0, 0, 0, 0, -_NEAR_M, options.max_range_m])
    rotations = np.stack([p.rotation for p in poses])
    positions = np.stack([p.position for p in poses])
    centers_cam = np.einsum("nji,naj->nai", rotations, index.centers[None, :, :] - positions[:, None, :])
    signed = centers_cam @ normals.T + offsets
    inside = np.all(signed >= -index.radii[None, :, None], axis=2) & (index.radii[None, :] >= 0)
    rows = np.nonzero(inside.any(axis=0))[0]
    if len(rows) > options.max_candidates:
        forwards = np.stack([p.forward for p in poses])
        distance = np.linalg.norm(index.positions[rows, None, :] - positions[None], axis=2)
        angle = np.arccos(np.clip(index.forwards[rows] @ forwards.T, -1.0, 1.0))
        score = (distance + 0.5 * angle).min(axis=1)
        rows = np.sort(rows[np.argsort(score, kind="stable")[: options.max_candidates]])
    return rows


@dataclass(frozen=True)
class ChunkCoverage:
    """What M candidate anchors cover of a chunk of N target views, on each view's G-cell grid.

    ``rows`` (M,) index rows; ``covered`` (M, N, G) bool, cells an anchor covers and is not occluded in;
    ``sketch_points`` (M,) int64, valid sketch points per anchor. ``visible_points()`` counts each anchor's sketch
    points that land unoccluded in each view.
    """

    rows: np.ndarray
    covered: np.ndarray
    sketch_points: np.ndarray
    _centre: np.ndarray
    """(N, M, S) int64 grid cell each sketch point lands in, -1 if none."""
    _depth: np.ndarray
    """(N, M, S) float32 each sketch point's depth in each view, metres."""
    _limit: np.ndarray
    """(N, G) float32 deepest unoccluded depth per cell."""

    @property
    def any_covered(self) -> np.ndarray:
        """(N, G) bool, the cells some candidate covers."""
        return self.covered.any(axis=0)

    def visible_points(self) -> np.ndarray:
        """(M, N) int64: the anchor's valid sketch points that land unoccluded in each view."""
        n = self._centre.shape[0]
        limit = np.take_along_axis(self._limit, np.maximum(self._centre, 0).reshape(n, -1), axis=1)
        visible = (self._centre >= 0) & (self._depth <= limit.reshape(self._depth.shape))
        return visible.sum(axis=2).T.astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _project_numba(sketch, valid, size, rotations, positions, cam, near, gw, gh, max_radius, zbuf, centre, depth):
    n, m, g = depth.shape
    cells = gw * gh
    fx, fy, cx, cy = cam[0], cam[1], cam[2], cam[3]
    half = np.float32(0.5)
    one = np.float32(1.0)
    for v_i in range(n):
        r = rotations[v_i]
        for a in range(m):
            base = (v_i * m + a) * cells
            for k in range(g):
                centre[v_i, a, k] = -1
                depth[v_i, a, k] = np.inf
                if not valid[a, k]:
                    continue
                d0 = sketch[a, k, 0] - positions[v_i, 0]
                d1 = sketch[a, k, 1] - positions[v_i, 1]
                d2 = sketch[a, k, 2] - positions[v_i, 2]
                x = d0 * r[0, 0] + d1 * r[1, 0] + d2 * r[2, 0]
                y = d0 * r[0, 1] + d1 * r[1, 1] + d2 * r[2, 1]
                z = d0 * r[0, 2] + d1 * r[1, 2] + d2 * r[2, 2]
                depth[v_i, a, k] = z
                if not z > near:
                    continue
                u = np.floor(fx * x / z + cx + half)
                v = np.floor(fy * y / z + cy + half)
                rad = min(max(np.ceil((size[a, k] * fx / z - one) * half), np.float32(0.0)), np.float32(max_radius))
                if u + rad < 0 or u - rad > gw - 1 or v + rad < 0 or v - rad > gh - 1:
                    continue
                ui, vi, ri = int(u), int(v), int(rad)
                if 0 <= ui < gw and 0 <= vi < gh:
                    centre[v_i, a, k] = vi * gw + ui
                for cv in range(max(vi - ri, 0), min(vi + ri, gh - 1) + 1):
                    for cu in range(max(ui - ri, 0), min(ui + ri, gw - 1) + 1):
                        p = base + cv * gw + cu
                        if z < zbuf[p]:
                            zbuf[p] = z


def _project_numpy(sketch, valid, size, rotations, positions, cam, near, gw, gh, max_radius, zbuf, centre, depth):
    """The same projection as ``_project_numba``, vectorised (the reference the kernel is tested against)."""
    n, m, g = depth.shape
    cells = gw * gh
    fx, fy, cx, cy = cam
    d = sketch[None] - positions[:, None, None, :]
    r = rotations[:, None, None]
    x = d[..., 0] * r[..., 0, 0] + d[..., 1] * r[..., 1, 0] + d[..., 2] * r[..., 2, 0]
    y = d[..., 0] * r[..., 0, 1] + d[..., 1] * r[..., 1, 1] + d[..., 2] * r[..., 2, 1]
    z = d[..., 0] * r[..., 0, 2] + d[..., 1] * r[..., 1, 2] + d[..., 2] * r[..., 2, 2]
    depth[:] = np.where(valid[None], z, np.float32(np.inf))
    ok = valid[None] & (z > near)
    safe_z = np.where(ok, z, np.float32(1.0))
    half, one = np.float32(0.5), np.float32(1.0)
    u = np.floor(fx * x / safe_z + cx + half)
    v = np.floor(fy * y / safe_z + cy + half)
    rad = np.clip(np.ceil((size[None] * fx / safe_z - one) * half), 0, max_radius)
    ok &= (u + rad >= 0) & (u - rad <= gw - 1) & (v + rad >= 0) & (v - rad <= gh - 1)
    in_image = ok & (u >= 0) & (u < gw) & (v >= 0) & (v < gh)
    centre[:] = np.where(in_image, np.clip(v, 0, gh - 1) * gw + np.clip(u, 0, gw - 1), -1).astype(np.int64)
    pair = np.broadcast_to(np.arange(n)[:, None, None] * m + np.arange(m)[None, :, None], z.shape)
    u_s, v_s, z_s, r_s, pair_s = u[ok].astype(np.int64), v[ok].astype(np.int64), z[ok], rad[ok].astype(np.int64), pair[ok]
    for radius in np.unique(r_s):
        chosen = r_s == radius
        span = np.arange(-radius, radius + 1)
        du, dv = (t.reshape(-1) for t in np.meshgrid(span, span, indexing="xy"))
        cu, cv = u_s[chosen, None] + du, v_s[chosen, None] + dv
        inside = (cu >= 0) & (cu < gw) & (cv >= 0) & (cv < gh)
        target = pair_s[chosen, None] * cells + cv * gw + cu
        np.minimum.at(zbuf, target[inside], np.broadcast_to(z_s[chosen, None], cu.shape)[inside])


def chunk_coverage(index: AnchorIndex, rows: np.ndarray, poses: Sequence[Pose], intrinsics: Intrinsics,
                   options: RetrievalOptions, *, backend: Literal["numba", "numpy"] = "numba") -> ChunkCoverage:
    """Project the sketches of anchors ``rows`` into each target view's coarse grid (see the module docstring).

    ``backend``: ``"numba"`` (a compiled loop, the default) or ``"numpy"`` (vectorised); they give equal results.
    """
    gw, gh = SKETCH_GRID
    cells = gw * gh
    m, n = len(rows), len(poses)
    if m == 0:
        return ChunkCoverage(rows, np.zeros((0, n, cells), bool), np.zeros(0, np.int64), np.zeros((n, 0, 0), np.int64),
                             np.zeros((n, 0, 0), np.float32), np.zeros((n, cells), np.float32))
    if backend not in ("numba", "numpy"):
        raise InvalidInputError(f"chunk_coverage backend must be 'numba' or 'numpy', got {backend!r}")
    coarse = intrinsics.scaled(gw, gh)
    valid = np.ascontiguousarray(index.sketch_valid[rows])
    g = valid.shape[1]
    zbuf = np.full(n * m * cells, np.inf, dtype=np.float32)
    centre = np.empty((n, m, g), dtype=np.int64)
    depth = np.empty((n, m, g), dtype=np.float32)
    project = _project_numba if backend == "numba" else _project_numpy
    project(
        np.ascontiguousarray(index.sketch_world[rows]), valid, np.ascontiguousarray(index.sketch_size_m[rows]),
        np.stack([p.rotation for p in poses]).astype(np.float32), np.stack([p.position for p in poses]).astype(np.float32),
        np.array([coarse.fx, coarse.fy, coarse.cx, coarse.cy], dtype=np.float32), np.float32(_NEAR_M), gw, gh,
        _MAX_CELL_RADIUS, zbuf, centre, depth,
    )
    zbuf = zbuf.reshape(n, m, cells)
    limit = zbuf.min(axis=1) * np.float32(1.0 + options.occlusion_tolerance)
    covered = np.isfinite(zbuf) & (zbuf <= limit[:, None, :])
    return ChunkCoverage(rows, covered.transpose(1, 0, 2), valid.sum(axis=1).astype(np.int64), centre, depth, limit)


def greedy_cover(coverage: ChunkCoverage, k: int, min_gain: float) -> list[int]:
    """Greedy weighted set cover of the chunk's cells by the candidates of ``coverage``; returns index rows.

    Each step takes the candidate whose newly covered cells weigh most, a cell counting in proportion to the share
    of the candidate's own sketch that lands, unoccluded, in that view: of two anchors covering as much, the one
    whose view is *of* this chunk wins over a wide, far view of which the target is a small part. It stops after
    ``k`` picks or when the best pick adds fewer than ``min_gain`` of the chunk's cells.
    """
    rows = coverage.rows
    sets = coverage.covered.reshape(len(rows), -1)
    share = coverage.visible_points() / np.maximum(coverage.sketch_points[:, None], 1)
    cell_value = np.repeat(share, coverage.covered.shape[2], axis=1)
    total = sets.shape[1]
    taken = np.zeros(total, bool)
    chosen: list[int] = []
    while len(chosen) < min(k, len(rows)):
        new = sets & ~taken
        count = new.sum(axis=1)
        gain = (new * cell_value).sum(axis=1)
        gain[chosen] = -1.0
        best = int(np.argmax(gain))
        if count[best] <= 0 or (chosen and count[best] < min_gain * total):
            break
        chosen.append(best)
        taken |= sets[best]
    return [int(rows[i]) for i in chosen]


class Retriever(Protocol):
    """One retrieval mode: ``select`` returns at most ``k`` index rows, most relevant first."""

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]: ...


@dataclass
class CoverageRetriever:
    """Greedy (weighted) set cover of the chunk's cells (AnchorWeave)."""

    options: RetrievalOptions

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]:
        rows = frustum_candidates(index, poses, intrinsics, self.options)
        if len(rows) == 0:  # no anchor in any target frustum
            return []
        return greedy_cover(chunk_coverage(index, rows, poses, intrinsics, self.options), k, self.options.min_gain)


@dataclass
class IoURetriever:
    """Anchors whose view overlaps a target view with IoU >= epsilon, top k by IoU (Spatia)."""

    options: RetrievalOptions

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]:
        rows = frustum_candidates(index, poses, intrinsics, self.options)
        if len(rows) == 0:  # no anchor in any target frustum
            return []
        cov = chunk_coverage(index, rows, poses, intrinsics, self.options)
        cells = cov.covered.shape[2]
        inter = 0.5 * (cov.covered.sum(axis=2) + cov.visible_points())
        union = cov.sketch_points[:, None] + cells - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        score = iou.max(axis=1)
        order = np.argsort(-score, kind="stable")
        return [int(rows[i]) for i in order[:k] if score[i] >= self.options.iou_epsilon]


@dataclass
class RecentRetriever:
    """The k newest anchors, newest first."""

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]:
        return list(range(len(index) - 1, max(len(index) - k, 0) - 1, -1))


@dataclass
class RandomRetriever:
    """k anchors drawn uniformly without replacement from the whole store."""

    rng: np.random.Generator

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]:
        if len(index) == 0:
            return []
        return [int(i) for i in self.rng.choice(len(index), size=min(k, len(index)), replace=False)]


@dataclass
class GlobalRetriever:
    """No anchors: the caller renders the global voxel map."""

    def select(self, index: AnchorIndex, poses: Sequence[Pose], intrinsics: Intrinsics, k: int) -> list[int]:
        return []


def make_retriever(mode: RetrievalMode, options: RetrievalOptions, rng: np.random.Generator) -> Retriever:
    """The retriever of ``mode`` (one of ``RETRIEVAL_MODES``)."""
    if mode == "coverage":
        return CoverageRetriever(options)
    if mode == "iou":
        return IoURetriever(options)
    if mode == "recent":
        return RecentRetriever()
    if mode == "random":
        return RandomRetriever(rng)
    if mode == "global":
        return GlobalRetriever()
    raise InvalidInputError(f"unknown retrieval mode {mode!r}; choose one of {RETRIEVAL_MODES}")


def retrieve(store: AnchorStore, poses: Sequence[Pose], intrinsics: Intrinsics, *, mode: RetrievalMode, k: int,
             options: RetrievalOptions = RetrievalOptions(), rng: np.random.Generator | None = None) -> list[Anchor]:
    """At most ``k`` anchors of ``store`` for the chunk of camera-to-world ``poses``, most relevant first."""
    _check_chunk(poses, k)
    retriever = make_retriever(mode, options, rng if rng is not None else np.random.default_rng(0))
    index = store.index()
    return [store[int(index.ids[row])] for row in retriever.select(index, poses, intrinsics, k)]
