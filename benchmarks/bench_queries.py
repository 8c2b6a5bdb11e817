"""Spatial queries on a ~2M-voxel street at 2 cm, each beside a baseline measured in the same run.

The map is built in code: a street (ground 30 m x 12 m), two building facades 5 m high with window recesses,
parked cars (boxes), lamp posts (cylinders), every surface textured and sampled at half a voxel so that it has no
holes. Views for free space are 640x480 depth frames rendered from the map itself (by raycasting it).

Rows, 100k queries each unless stated:
* raycast from camera positions along the street, directions from 45 deg below to 20 deg above the horizon, 20 m
  range: ours (hierarchical empty-space skipping, numba) beside a plain voxel DDA in numpy (the reference
  ``raycast_reference``), answers compared ray by ray; and ours again with the unknown-space test against 8 views;
* nearest surface point near the surface (0-0.1 m off) and in free space (0-2.5 m off) beside Open3D
  ``core.nns`` (exact KNN, index built beforehand and not timed); the error column is ours minus exact;
* sphere collisions (radius 0.05-0.5 m) beside Open3D KNN minus the radius; capsules and oriented boxes (no
  baseline: they show the cost of the exact search);
* occupancy against 8 views beside the numpy reference;
* keeping the field current: integrating a 640x480 frame that adds a new object, then ``sync``; a box removal
  then ``sync``; each beside rebuilding the field from scratch.

The CPU is shared with other work, so figures are noisy (medians of ``--repeats``).

    python benchmarks/bench_queries.py [--queries 100000] [--repeats 3] [--baseline-rays 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.voxel_map import Source, VoxelMap
from worldweave.bridge.queries import Occupancy, WorldQueries
from worldweave.bridge.queries.occupancy import seen_through_reference
from worldweave.bridge.queries.raycast import raycast_reference
from worldweave.bridge.regions import Box
from worldweave.proto.geometry import Intrinsics, Pose

VOXEL_M = 0.02
LENGTH_M, WIDTH_M, FACADE_M = 30.0, 12.0, 5.0


# ----------------------------------------------------------------------------------------------- the street


def _plane(origin, u, v, step: float) -> np.ndarray:
    """Points on the parallelogram ``origin + a u + b v`` (a, b in [0, 1]) every ``step`` metres."""
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    na, nb = int(np.linalg.norm(u) / step) + 1, int(np.linalg.norm(v) / step) + 1
    a, b = np.meshgrid(np.linspace(0, 1, na), np.linspace(0, 1, nb), indexing="ij")
    return (origin + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v).astype(np.float32)


def _box(lo, hi, step: float) -> list[np.ndarray]:
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    size = hi - lo
    faces = []
    for axis in range(3):
        u, v = np.eye(3)[(axis + 1) % 3] * size[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3] * size[(axis + 2) % 3]
        for side in (lo, lo + np.eye(3)[axis] * size[axis]):
            faces.append(_plane(side, u, v, step))
    return faces


def _cylinder(base, radius: float, height: float, step: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, int(2 * np.pi * radius / step) + 1)
    heights = np.linspace(0, height, int(height / step) + 1)
    a, h = np.meshgrid(angles, heights, indexing="ij")
    points = np.stack([radius * np.cos(a), radius * np.sin(a), h], axis=-1).reshape(-1, 3)
    return (points + np.asarray(base)).astype(np.float32)


def street_points(step: float) -> np.ndarray:
    """Surface points of the street, every ``step`` metres (world Z up, x along the street)."""
    half = WIDTH_M / 2
    parts = [_plane([0, -half, 0], [LENGTH_M, 0, 0], [0, WIDTH_M, 0], step)]
    for y in (-half, half):
        facade = _plane([0, y, 0], [LENGTH_M, 0, 0], [0, 0, FACADE_M], step)
        inward = -np.sign(y)
        windows = np.zeros(len(facade), dtype=bool)
        for x0 in np.arange(1.5, LENGTH_M - 1.0, 3.0):
            for z0 in (1.2, 3.2):
                windows |= (facade[:, 0] > x0) & (facade[:, 0] < x0 + 1.2) & (facade[:, 2] > z0) & (facade[:, 2] < z0 + 1.2)
                parts.append(_plane([x0, y - inward * 0.2, z0], [1.2, 0, 0], [0, 0, 1.2], step))  # recessed pane
        parts.append(facade[~windows])
    rng = np.random.default_rng(7)
    for i in range(8):
        x = 2.0 + i * 3.5 + rng.uniform(-0.3, 0.3)
        y = (-half + 1.2) if i % 2 else (half - 3.0)
        parts.extend(_box([x, y, 0.0], [x + 2.0 * 2, y + 1.8, 1.5], step)[:5])  # no bottom face
    for x in np.arange(3.0, LENGTH_M, 6.0):
        for y in (-half + 0.6, half - 0.6):
            parts.append(_cylinder([x, y, 0.0], 0.1, 4.0, step))
    return np.concatenate(parts)


def street_colors(points: np.ndarray) -> np.ndarray:
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    rgb = np.stack([120 + 60 * np.sin(x * 3.0), 110 + 50 * np.sin(y * 4.0 + z), 100 + 40 * np.cos(z * 5.0)], axis=1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def build_street() -> VoxelMap:
    points = street_points(VOXEL_M / 2)
    voxel_map = VoxelMap(VOXEL_M)
    for start in range(0, len(points), 2_000_000):
        chunk = points[start : start + 2_000_000]
        voxel_map.insert(chunk, street_colors(chunk))
    return voxel_map


# ------------------------------------------------------------------------------------------------- helpers


CPU_MS: dict[str, float] = {}
"""Median process CPU time (all threads) of the last ``timed`` call per label: less sensitive to other load."""


def timed(fn, repeats: int, label: str = "") -> tuple[float, object]:
    """Median wall time in ms of ``repeats`` calls, and the last result; CPU time goes to ``CPU_MS[label]``."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - started_cpu) * 1e3)
    CPU_MS[label] = statistics.median(cpu)
    return statistics.median(times), result


def render(queries: WorldQueries, pose: Pose, intrinsics: Intrinsics, extra_box: tuple | None = None) -> RGBDFrame:
    """A depth frame of the map seen from ``pose`` (by raycasting it), optionally with an analytic box in front."""
    rays_cam = intrinsics.pixel_rays().reshape(-1, 3).astype(np.float64)
    norms = np.linalg.norm(rays_cam, axis=1)
    directions = (rays_cam / norms[:, None]) @ pose.rotation.T
    origins = np.broadcast_to(pose.position, directions.shape)
    hits = queries.raycast(origins, directions, 40.0)
    t = np.where(hits.hit, hits.distance_m, 0.0)
    color = hits.color.copy()
    if extra_box is not None:
        lo, hi, box_rgb = extra_box
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - origins) / directions, (hi - origins) / directions
            enter, leave = np.minimum(t1, t2).max(axis=1), np.maximum(t1, t2).min(axis=1)
        box_hit = (enter <= leave) & (enter > 0) & ((t == 0) | (enter < t))
        t = np.where(box_hit, enter, t)
        color[box_hit] = box_rgb
    depth = (t / norms).astype(np.float32)
    h, w = intrinsics.shape
    return RGBDFrame(color.reshape(h, w, 3), depth.reshape(h, w), pose, intrinsics)


def camera_poses(count: int) -> list[Pose]:
    poses = []
    for i in range(count):
        x = 3.0 + i * (LENGTH_M - 6.0) / max(count - 1, 1)
        look = np.array([np.cos(i * 0.9), 0.6 * np.sin(i * 0.9), -0.25])
        poses.append(Pose.look_at([x, 0.0, 1.6], [x, 0.0, 1.6] + look))
    return poses


def surface_offsets(voxel_map: VoxelMap, n: int, max_off_m: float, rng) -> np.ndarray:
    """Points at a uniform 0..max_off_m from random surface voxels, in random directions."""
    centers = voxel_map.points()[0]
    picks = centers[rng.integers(0, len(centers), n)].astype(np.float64)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return picks + direction * rng.uniform(0, max_off_m, (n, 1))


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100_000, help="queries per row (default 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure, median shown (default 3)")
    parser.add_argument("--baseline-rays", type=int, default=100_000, help="rays for the numpy DDA (default: all)")
    args = parser.parse_args()
    from worldweave.bridge.open3d_import import load_open3d

    o3d = load_open3d()

    rng = np.random.default_rng(0)
    n = args.queries
    rows: list[tuple[str, float, str, float | None, str]] = []

    started = time.perf_counter()
    voxel_map = build_street()
    build_map_s = time.perf_counter() - started
    warm = WorldQueries(VoxelMap(VOXEL_M))  # compile the kernels outside the timings
    warm.voxel_map.insert(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8))
    warm.raycast(np.zeros((1, 3)), np.ones((1, 3)), 1.0)
    warm.nearest(np.zeros((1, 3)), 1.0)
    warm.occupancy(np.zeros((1, 3)))
    warm.collide_capsules(np.zeros((1, 3)), np.ones((1, 3)), 0.1)
    warm.collide_boxes(np.zeros((1, 3)), np.ones((1, 3)), np.eye(3)[None])
    queries = WorldQueries(voxel_map)
    build_ms, stats = timed(queries.sync, 1)
    print(
        f"street map: {len(voxel_map):,} voxels at {VOXEL_M * 100:.0f} cm ({build_map_s:.1f} s to build), "
        f"numba threads {numba.get_num_threads()}"
    )
    print(
        f"distance field + surface copy: {queries.grid.n_chunks:,} chunks, {queries.grid.n_blocks:,} blocks, "
        f"{queries.memory_bytes() / 2**20:.1f} MiB (max_distance_m {queries.max_distance_m}); first sync {build_ms:.0f} ms"
    )

    # Views: 8 frames rendered from the map.
    intrinsics = Intrinsics.from_fov(640, 480, fov_x_deg=70.0)
    views = [render(queries, pose, intrinsics) for pose in camera_poses(8)]
    queries.views = views

    # --- raycast
    starts = np.stack([rng.uniform(2, LENGTH_M - 2, n), rng.uniform(-3, 3, n), np.full(n, 1.6)], axis=1)
    azimuth, elevation = rng.uniform(0, 2 * np.pi, n), np.radians(rng.uniform(-45, 20, n))
    directions = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], 1)
    geometry_only = WorldQueries(voxel_map)
    geometry_only.sync()
    ours_ms, hits = timed(lambda: geometry_only.raycast(starts, directions, 20.0), args.repeats, "raycast, geometry only")
    m = min(args.baseline_rays, n)
    keys = np.sort(voxel_map.voxels().keys)
    base_ms, (ref_t, _) = timed(lambda: raycast_reference(keys, VOXEL_M, starts[:m], directions[:m], 20.0), 1)
    base_ms *= n / m
    agree = np.mean((hits.hit[:m] == (ref_t >= 0)) & (~hits.hit[:m] | (np.abs(hits.distance_m[:m] - ref_t) < 1e-6)))
    scaled = "" if m == n else f", DDA timed on {m:,} rays and scaled"
    rows.append(("raycast, geometry only", ours_ms, "numpy voxel DDA", base_ms, f"{hits.hit.mean():.0%} hit; {agree:.2%} same answer{scaled}"))
    unknown_ms, hits_u = timed(lambda: queries.raycast(starts, directions, 20.0), args.repeats, "raycast + unknown test (8 views)")
    rows.append(("raycast + unknown test (8 views)", unknown_ms, "numpy voxel DDA", base_ms, f"{hits_u.ended_in_unknown.mean():.0%} end in unknown"))

    # --- nearest
    centers = voxel_map.points()[0]
    nns = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(centers))
    nns.knn_index()
    for label, max_off in (("near surface (0-0.1 m)", 0.1), ("free space (0-2.5 m)", 2.5)):
        points = surface_offsets(voxel_map, n, max_off, rng)
        ours_ms, near = timed(lambda: queries.nearest(points, 2.5), args.repeats, f"nearest, {label}")
        tensor = o3d.core.Tensor(points.astype(np.float32))
        base_ms, (_, d2) = timed(lambda: nns.knn_search(tensor, 1), args.repeats)
        exact = np.sqrt(d2.numpy()[:, 0].astype(np.float64))
        error = near.distance_m - exact
        note = f"error vs exact: max {np.abs(error).max() * 1000:.2f} mm, >1 cm: {np.mean(np.abs(error) > 0.01):.3%}"
        rows.append((f"nearest, {label}", ours_ms, "Open3D core.nns knn", base_ms, note))

    # --- collisions
    centers_q = surface_offsets(voxel_map, n, 1.0, rng)
    radii = rng.uniform(0.05, 0.5, n)
    ours_ms, spheres = timed(lambda: queries.collide_spheres(centers_q, radii), args.repeats, "sphere collisions (r 0.05-0.5 m)")
    tensor = o3d.core.Tensor(centers_q.astype(np.float32))
    base_ms, _ = timed(lambda: nns.knn_search(tensor, 1), args.repeats)
    rows.append(("sphere collisions (r 0.05-0.5 m)", ours_ms, "Open3D knn - radius", base_ms, f"{spheres.hit.mean():.0%} hit"))
    ends = centers_q + rng.normal(size=(n, 3)) * 0.3
    ours_ms, capsules = timed(lambda: queries.collide_capsules(centers_q, ends, 0.1), args.repeats, "capsule collisions (~0.5 m long, r 0.1 m)")
    rows.append(("capsule collisions (~0.5 m long, r 0.1 m)", ours_ms, "-", None, f"{capsules.hit.mean():.0%} hit; exact"))
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]
    half = rng.uniform(0.05, 0.3, (n, 3))
    ours_ms, boxes = timed(lambda: queries.collide_boxes(centers_q, half, q), args.repeats, "box collisions (half extents 0.05-0.3 m)")
    rows.append(("box collisions (half extents 0.05-0.3 m)", ours_ms, "-", None, f"{boxes.hit.mean():.0%} hit; exact"))

    # --- occupancy
    points = np.stack([rng.uniform(0, LENGTH_M, n), rng.uniform(-WIDTH_M / 2, WIDTH_M / 2, n), rng.uniform(0, 4, n)], 1)
    ours_ms, codes = timed(lambda: queries.occupancy(points), args.repeats, "occupancy (8 views)")
    base_ms, free = timed(lambda: seen_through_reference(views, points, queries.free_margin_m), 1)
    same = np.mean((codes == Occupancy.FREE) == (free & (codes != Occupancy.OCCUPIED)))
    rows.append(("occupancy (8 views)", ours_ms, "numpy reference", base_ms, f"{np.mean(codes == Occupancy.FREE):.0%} free; {same:.2%} same"))

    # --- keeping the field current
    integrate_ms, sync_ms, sync_cpu_ms, rebuild_ms, added = [], [], [], [], []
    for i, pose in enumerate(camera_poses(args.repeats + 1)):
        x = pose.position[0] + 2.0
        frame = render(queries, pose, intrinsics, extra_box=(np.array([x, -0.5, 0.0]), np.array([x + 0.6, 0.5, 1.2]), [200, 40, 40]))
        started = time.perf_counter()
        voxel_map.integrate(frame, frame_id=i, source=Source.GENERATED)
        integrate_ms.append((time.perf_counter() - started) * 1e3)
        ms, stats = timed(queries.sync, 1, "sync")
        sync_ms.append(ms)
        sync_cpu_ms.append(CPU_MS["sync"])
        added.append(stats.voxels_added)
        if i < 1:
            rebuild_ms.append(timed(lambda: WorldQueries(voxel_map).sync(), 1)[0])
    CPU_MS["integrate 640x480 frame + new object: sync"] = statistics.median(sync_cpu_ms)
    rows.append(
        (
            "integrate 640x480 frame + new object: sync",
            statistics.median(sync_ms),
            "rebuild field",
            statistics.median(rebuild_ms),
            f"integrate itself {statistics.median(integrate_ms):.0f} ms; {int(np.median(added)):,} voxels added",
        )
    )
    started = time.perf_counter()
    removed = voxel_map.remove(Box([10.0, -6.5, -0.1], [11.0, -4.0, 5.5]))
    remove_ms = (time.perf_counter() - started) * 1e3
    edit_ms, _ = timed(queries.sync, 1, "remove a 1 m slab (facade + car): sync")
    rows.append(("remove a 1 m slab (facade + car): sync", edit_ms, "rebuild field", statistics.median(rebuild_ms), f"{removed:,} voxels removed; remove itself {remove_ms:.0f} ms"))

    print(f"\n{n:,} queries per row; medians of {args.repeats} (CPU shared, noisy)")
    print("ours cpu ms: process CPU time over all threads (less affected by other load than wall time)")
    print(f"{'query':44s} {'ours ms':>9s} {'ours cpu ms':>11s}  {'baseline':22s} {'base ms':>9s} {'speed-up':>9s}  notes")
    for name, ours, baseline, base, note in rows:
        cpu = f"{CPU_MS[name]:11.1f}" if name in CPU_MS else f"{'-':>11s}"
        base_text = f"{base:9.1f}" if base is not None else f"{'-':>9s}"
        speed = f"{base / ours:8.1f}x" if base is not None else f"{'-':>9s}"
        print(f"{name:44s} {ours:9.1f} {cpu}  {baseline:22s} {base_text} {speed}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
