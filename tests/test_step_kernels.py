"""The step path's numba kernels equal the numpy code they replaced, bit for bit: anchor sampling (one pass over the
keyframe instead of a dozen numpy passes), the footprint refit of ``kept_depth`` (a ring of summed-area rows and
per-radius column minima instead of full tables and a window scan, on any split into bands of rows), and the push-pull
fills of ``reproject`` and ``continue`` (their first and last levels made in one pass each), and ``continue``'s
grouping of its holes by plane for painting."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.kept_depth import (
    LANDED_FIT_MAX_RADIUS_PX,
    LANDED_FIT_MIN_POINTS,
    LANDED_FIT_TOLERANCE,
    _bands,
    _fit_bands,
    _landed_counts,
    kept_depth,
)
from worldweave.bridge import cores
from worldweave.bridge.memory.anchors import AnchorOptions, sample_points
from worldweave.proto.geometry import Intrinsics


def _edge_free_numpy(depth: np.ndarray, edge_rel: float) -> np.ndarray:
    valid = depth > 0
    good = valid.copy()
    padded = np.pad(depth, 1, mode="edge")
    h, w = depth.shape
    for dv, du in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dv : 1 + dv + h, 1 + du : 1 + du + w]
        good &= (neighbour > 0) & (np.abs(neighbour - depth) <= edge_rel * depth)
    return good


def _sample_points_numpy(rgb, depth, intrinsics, options, confidence=None):
    """``anchors.sample_points`` as numpy computed it before its numba kernel."""
    s = options.stride_for(intrinsics.width)
    h, w = (intrinsics.height // s) * s, (intrinsics.width // s) * s
    good = _edge_free_numpy(np.where(depth <= options.max_depth_m, depth, 0.0), options.edge_rel)[:h, :w]
    blocks = (h // s, s, w // s, s)
    good_b = good.reshape(blocks).astype(np.float32)
    count = good_b.sum(axis=(1, 3))
    keep = count >= options.min_block_fraction * s * s
    safe = np.maximum(count, 1.0)
    z = (depth[:h, :w].reshape(blocks) * good_b).sum(axis=(1, 3)) / safe
    color = (rgb[:h, :w].reshape(*blocks, 3).astype(np.float32) * good_b[..., None]).sum(axis=(1, 3)) / safe[..., None]
    rows, cols = np.nonzero(keep)
    z = z[rows, cols]
    u = cols * s + (s - 1) / 2.0
    v = rows * s + (s - 1) / 2.0
    points = np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)
    colors = np.clip(np.round(color[rows, cols]), 0, 255).astype(np.uint8)
    sizes = (s * z / intrinsics.fx).astype(np.float32)
    if confidence is None:
        point_confidence = np.ones(len(z), np.float32)
    else:
        block_confidence = (confidence[:h, :w].reshape(blocks) * good_b).sum(axis=(1, 3)) / safe
        point_confidence = np.clip(block_confidence[rows, cols], 0.0, 1.0).astype(np.float32)
    return points.astype(np.float32), colors, sizes, point_confidence


def _scene_like_depth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth planes with steps, holes and far readings: every branch of the edge test and the depth cap."""
    v, u = np.mgrid[:h, :w]
    depth = 1.0 / (0.2 + 0.003 * u + 0.002 * v) + np.where(u > w // 2, 1.5, 0.0)
    depth *= 1.0 + rng.normal(0.0, 0.01, (h, w))
    depth[rng.uniform(size=(h, w)) < 0.05] = 0.0
    depth[: h // 6] += 4.0  # beyond the default 8 m cap in places
    return depth.astype(np.float32)


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8, 11, 16])
@pytest.mark.parametrize("with_confidence", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_sample_points_equals_numpy(monkeypatch, stride: int, with_confidence: bool, threads: int) -> None:
    """On one thread and split into bands of block rows (a band per thread)."""

    @contextmanager
    def fixed(requested, limit):
        yield threads

    monkeypatch.setattr(cores, "threads_for", fixed)
    rng = np.random.default_rng(stride)
    h, w = 97, 131  # not a multiple of any stride: partial blocks are dropped
    depth = _scene_like_depth(rng, h, w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    confidence = rng.uniform(0.0, 1.0, (h, w)).astype(np.float32) if with_confidence else None
    intrinsics = Intrinsics(120.0, 118.0, 64.3, 48.1, w, h)
    options = AnchorOptions(stride_px=stride, min_block_fraction=0.3)
    expected = _sample_points_numpy(rgb, depth, intrinsics, options, confidence)
    got = sample_points(rgb, depth, intrinsics, options, confidence)
    assert len(expected[0]) > 0
    for name, e, g in zip(("points", "colors", "sizes", "confidence"), expected, got):
        assert e.dtype == g.dtype and np.array_equal(e, g), name


def _kept_depth_numpy(render: RenderResult) -> tuple[np.ndarray, np.ndarray]:
    """``kept_depth`` as a plain loop over full summed-area tables and each window's pixels (the code before the
    ring and the column minima), in numpy: slow, used on small images only."""
    covered = render.mask & (render.depth > 0)
    confidence = np.where(covered, render.confidence, np.float32(0)).astype(np.float32)
    depth = np.where(covered, render.depth, np.float32(0)).astype(np.float32)
    landed = confidence > 0
    if landed.all() or not landed.any():
        return depth, confidence
    h, w = depth.shape
    vv, uu = np.mgrid[:h, :w].astype(np.float64)
    inv = np.where(landed, 1.0 / np.where(landed, depth, 1.0).astype(np.float64), 0.0)
    one = landed.astype(np.float64)
    moments = [one, uu * one, vv * one, uu * uu * one, uu * vv * one, vv * vv * one, inv, inv * uu, inv * vv, inv * inv]
    tables = []
    for m in moments:  # row by row, as the kernel adds: table[v + 1] = table[v] + running row sum
        t = np.zeros((h + 1, w + 1))
        for v in range(h):
            t[v + 1, 1:] = t[v, 1:] + np.cumsum(m[v])
        tables.append(t)

    def box(k, v0, v1, u0, u1):
        t = tables[k]
        return t[v1 + 1, u1 + 1] - t[v0, u1 + 1] - t[v1 + 1, u0] + t[v0, u0]

    spread = covered & ~landed
    out_depth, out_conf = depth.copy(), confidence.copy()
    for v, u in zip(*np.nonzero(spread)):
        for radius in range(1, LANDED_FIT_MAX_RADIUS_PX + 1):
            v0, v1, u0, u1 = max(v - radius, 0), min(v + radius, h - 1), max(u - radius, 0), min(u + radius, w - 1)
            if (box(0, v0, v1, u0, u1) >= LANDED_FIT_MIN_POINTS and u0 < u < u1 and v0 < v < v1
                    and box(0, v0, v1, u0, u - 1) > 0 and box(0, v0, v1, u + 1, u1) > 0
                    and box(0, v0, v - 1, u0, u1) > 0 and box(0, v + 1, v1, u0, u1) > 0):
                break
        else:
            continue
        s = [box(k, v0, v1, u0, u1) for k in range(10)]
        n = s[0]
        sx, sy = s[1] - n * u, s[2] - n * v
        sxx = s[3] - 2 * u * s[1] + n * u * u
        sxy = s[4] - u * s[2] - v * s[1] + n * u * v
        syy = s[5] - 2 * v * s[2] + n * v * v
        sw, sxw, syw, sww = s[6], s[7] - u * s[6], s[8] - v * s[6], s[9]
        det = sxx * (syy * n - sy * sy) - sxy * (sxy * n - sy * sx) + sx * (sxy * sy - syy * sx)
        if abs(det) < 1e-9:
            continue
        a = (sxw * (syy * n - sy * sy) - sxy * (syw * n - sy * sw) + sx * (syw * sy - syy * sw)) / det
        b = (sxx * (syw * n - sy * sw) - sxw * (sxy * n - sy * sx) + sx * (sxy * sw - syw * sx)) / det
        c = (sxx * (syy * sw - sy * syw) - sxy * (sxy * sw - sx * syw) + sxw * (sxy * sy - syy * sx)) / det
        if c <= 0:
            continue
        residual = (sww - 2 * (a * sxw + b * syw + c * sw) + a * a * sxx + 2 * a * b * sxy + b * b * syy
                    + 2 * a * c * sx + 2 * b * c * sy + c * c * n)
        if residual > n * (LANDED_FIT_TOLERANCE * c) ** 2:
            continue
        window = confidence[v0 : v1 + 1, u0 : u1 + 1][landed[v0 : v1 + 1, u0 : u1 + 1]]
        out_depth[v, u] = np.float32(1.0 / c)
        out_conf[v, u] = min(np.float32(1.0), window.min())
    return out_depth, out_conf


def _footprint_case() -> tuple[RenderResult, np.ndarray]:
    """A render of two planes and a step whose points land on a sparse lattice (the pixels between are footprint
    spread), with an uncovered corner; and that lattice."""
    rng = np.random.default_rng(3)
    h, w = 44, 57
    v, u = np.mgrid[:h, :w]
    true_depth = 1.0 / (0.3 + 0.002 * u - 0.003 * v) + np.where(u > 30, 0.8, 0.0)  # two planes and a step
    smeared = (true_depth * (1.0 + rng.normal(0.0, 0.002, (h, w)))).astype(np.float32)
    confidence = np.zeros((h, w), np.float32)
    lattice = (v % 4 == 1) & (u % 4 == 2)
    confidence[lattice] = rng.uniform(0.2, 1.0, int(lattice.sum())).astype(np.float32)
    mask = np.ones((h, w), bool)
    mask[:6, :9] = False  # an uncovered corner
    return RenderResult(np.zeros((h, w, 3), np.uint8), smeared, mask, confidence), lattice


def test_kept_depth_equals_the_plain_window_fit() -> None:
    render, lattice = _footprint_case()
    expected_depth, expected_conf = _kept_depth_numpy(render)
    depth, conf = kept_depth(render)
    assert np.count_nonzero(conf[~lattice]) > 100, "the case must refit many footprint pixels"
    assert np.array_equal(depth, expected_depth) and np.array_equal(conf, expected_conf)


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_kept_depth_fits_the_same_on_any_split_into_bands(threads: int) -> None:
    """The fits split into bands of rows (one thread each) equal the plain window fit: a band makes the summed-area
    rows above it itself, and reads no fit another band writes."""
    render, _ = _footprint_case()
    expected_depth, expected_conf = _kept_depth_numpy(render)
    covered = render.mask & (render.depth > 0)
    depth = np.where(covered, render.depth, np.float32(0)).astype(np.float32)
    conf = np.where(covered, render.confidence, np.float32(0)).astype(np.float32)
    spread = covered & ~(conf > 0)
    bands = _bands(spread, threads)
    assert len(bands) == threads + 1 and bands[0] == 0 and bands[-1] == depth.shape[0] and np.all(np.diff(bands) >= 0)
    _fit_bands(bands, depth, conf, spread, _landed_counts(conf), LANDED_FIT_MIN_POINTS, LANDED_FIT_TOLERANCE,
               LANDED_FIT_MAX_RADIUS_PX)
    assert np.array_equal(depth, expected_depth) and np.array_equal(conf, expected_conf)


@pytest.mark.parametrize("shape", [(48, 64), (37, 51), (5, 3)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_reproject_frame_equals_push_pull_fill_and_numpy(monkeypatch, shape: tuple[int, int], threads: int) -> None:
    """The generator's fused first push and last pull equal ``push_pull_fill_cpu`` of the (4, H, W) colour and depth
    rounded by numpy, as ``generate`` computed its frame before (that on one thread; the frame with each pyramid
    level's rows split into bands, one thread each)."""
    from worldweave.bridge.generators.reproject import push_pull_fill_cpu, push_pull_frame

    split = [1]

    @contextmanager
    def fixed(requested, limit):
        yield min(split[0], limit)

    monkeypatch.setattr(cores, "threads_for", fixed)
    rng = np.random.default_rng(shape[0])
    h, w = shape
    for share in (0.02, 0.3, 0.9):
        known = rng.uniform(size=(h, w)) < share
        known.flat[0] = True
        known.flat[-1] = False
        rgb = np.where(known[..., None], rng.integers(0, 256, (h, w, 3)), 0).astype(np.uint8)
        depth = np.where(known, rng.uniform(0.5, 6.0, (h, w)), 0.0).astype(np.float32)
        render = RenderResult(rgb, depth, known, np.where(known, 1.0, 0.0).astype(np.float32))
        kept = np.where(known, depth * np.float32(1.01), 0.0).astype(np.float32)
        values = np.concatenate([rgb.transpose(2, 0, 1).astype(np.float32), depth[None]])
        split[0] = 1
        filled = push_pull_fill_cpu(values, known)
        expected_frame = np.clip(np.rint(filled[:3]), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        expected_depth = np.where(known, kept, filled[3]).astype(np.float32)
        split[0] = threads
        frame, got_depth = push_pull_frame(render, kept, known)
        assert np.array_equal(frame, expected_frame) and np.array_equal(got_depth, expected_depth)


@pytest.mark.parametrize("shape", [(48, 64), (37, 51), (5, 3)])
def test_continue_fill_equals_push_pull_of_numpy_half_resolution_means(shape: tuple[int, int]) -> None:
    """``continue``'s fill of unknown pixels (one kernel for the half-resolution means and their weights) equals the
    numpy it replaced: each 2x2 block's mean colour of its pixels not to paint, ``push_pull_fill_cpu`` of those means
    on the blocks that have any, written rounded into the pixels to paint; depth 0 where confidence is 0."""
    from worldweave.bridge.generators.continuation import ContinuationGenerator
    from worldweave.bridge.generators.reproject import push_pull_fill_cpu

    rng = np.random.default_rng(shape[1])
    h, w = shape
    v, u = np.mgrid[:h, :w]
    for share in (0.05, 0.5, 0.97):  # the last leaves every block a known pixel: no hole at half resolution
        kept = rng.uniform(size=(h, w)) < share
        kept.flat[0] = True
        kept.flat[-1] = False
        rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        depth = rng.uniform(0.5, 6.0, (h, w)).astype(np.float32)
        confidence = np.where(kept, rng.uniform(0.0, 1.0, (h, w)), 0.0).astype(np.float32)
        confidence.flat[0] = 0.0  # kept, confidence 0: keeps its colour, loses its depth
        paint = (confidence == 0) & ~kept
        sums = np.zeros(((h + 1) // 2, (w + 1) // 2, 3), np.float32)
        counts = np.zeros(sums.shape[:2], np.float32)
        np.add.at(sums, (v[~paint] // 2, u[~paint] // 2), rgb[~paint].astype(np.float32))
        np.add.at(counts, (v[~paint] // 2, u[~paint] // 2), np.float32(1))
        small = push_pull_fill_cpu((sums / np.maximum(counts, 1)[..., None]).transpose(2, 0, 1), counts > 0)
        expected = rgb.copy()
        upsampled = (small[:, v // 2, u // 2].astype(np.float64) + 0.5).astype(np.int64).transpose(1, 2, 0)
        expected[paint] = np.clip(upsampled, 0, 255).astype(np.uint8)[paint]
        got_rgb, got_depth, got_confidence = ContinuationGenerator._fill_unknown(
            rgb.reshape(-1, 3).copy(), depth.reshape(-1).copy(), confidence.reshape(-1).copy(), (h, w),
            kept.reshape(-1))
        assert np.array_equal(got_rgb, expected)
        assert np.array_equal(got_depth, np.where(confidence == 0, np.float32(0), depth))
        assert np.array_equal(got_confidence, confidence)


def test_anchor_index_rebuilt_from_kept_rows_equals_a_full_build(room) -> None:
    """The store keeps each anchor's index row across rebuilds; after adds, a fork and edits (which replace anchors)
    its index equals one built from scratch from the same anchors."""
    from worldweave.bridge.memory.anchors import AnchorIndex, AnchorStore
    from worldweave.bridge.regions import Box
    from worldweave.proto.geometry import Pose

    intrinsics = Intrinsics.from_fov(64, 48, fov_x_deg=70.0)
    store = AnchorStore()

    def check(s: AnchorStore) -> None:
        fresh = AnchorStore()
        for anchor in s:
            fresh.add(anchor)
        got, want = s.index(), fresh.index()
        for name in AnchorIndex.__dataclass_fields__:
            assert np.array_equal(getattr(got, name), getattr(want, name)), name

    for i, eye in enumerate([[-1.0, -0.5, 1.4], [0.0, 0.5, 1.3], [0.8, -0.2, 1.5]]):
        store.add_frame(room.render(Pose.look_at(eye, [2.5, 0.0, 1.0]), intrinsics), frame_id=i)
        check(store)
    fork = store.fork()
    store.remove(Box([1.5, -1.0, 0.0], [3.6, 1.0, 1.2]))
    check(store)
    check(fork)
    fork.add_frame(room.render(Pose.look_at([0.2, 0.0, 1.2], [-2.0, 1.0, 1.0]), intrinsics), frame_id=9)
    check(fork)
    assert len(store.index()) == 3 and len(fork.index()) == 4


def test_continue_groups_its_holes_and_their_points_as_numpy_selects_them() -> None:
    """``continue``'s painting: the holes grouped by the plane continuing into them, and the uncontinued ones by the
    plane standing there, each group as ``np.flatnonzero`` picks it (ascending); their camera-frame points the same
    products as ``rays[holes[chosen]] * depth[chosen, None]``."""
    from worldweave.bridge.generators.continuation import _holes_by_plane, _points_on_rays

    rng = np.random.default_rng(5)
    planes, count = 5, 4000
    hole_plane = rng.integers(-1, planes, count)
    standing = np.where(rng.uniform(size=count) < 0.3, -1, rng.integers(0, planes, count))
    continued, continued_at, drawn, drawn_at = _holes_by_plane(hole_plane, standing, planes)
    for p in range(planes):
        assert np.array_equal(continued[continued_at[p] : continued_at[p + 1]], np.flatnonzero(hole_plane == p))
        assert np.array_equal(drawn[drawn_at[p] : drawn_at[p + 1]], np.flatnonzero((standing == p) & (hole_plane < 0)))
    assert len(drawn) == np.count_nonzero((standing >= 0) & (hole_plane < 0))  # none in a plane past the last

    rays = Intrinsics.from_fov(80, 60, fov_x_deg=70.0).pixel_rays(np.float64).reshape(-1, 3)
    holes = np.sort(rng.choice(len(rays), count, replace=False))
    depth = rng.uniform(0.3, 9.0, count)
    chosen = continued[continued_at[2] : continued_at[3]]
    for depths in (depth[chosen], depth[chosen].astype(np.float32)):  # the painting's float64, the render's float32
        points = _points_on_rays(rays, holes[chosen], depths)
        assert points.dtype == np.float64 and np.array_equal(points, rays[holes[chosen]] * depths[:, None])
