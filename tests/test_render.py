"""The point splatter: pixel-centre convention, z-buffer, footprint without see-through holes, torch == numba."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
import pytest
import torch

from worldweave.bridge import cores, render
from worldweave.bridge.open3d_import import load_open3d
from worldweave.bridge.render import render_points, splat_points
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics(120.0, 110.0, 79.5, 59.5, 160, 120)


def _random_cloud(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(-1, 6, n)], axis=1).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    sizes = rng.uniform(0.0, 0.08, n).astype(np.float32)
    return points, colors, sizes


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_point_lands_on_nearest_pixel_centre_with_halves_rounding_up() -> None:
    intrinsics = Intrinsics(100.0, 100.0, 10.0, 8.0, 21, 17)
    # u = 100 * x / 2 + 10: x = 0.03 -> u = 11.5 (rounds up to 12); x = -0.029 -> u = 8.55 (to 9).
    points = np.array([[0.03, 0.0, 2.0], [-0.029, 0.05, 2.0]], dtype=np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    result = render_points(points, colors, Pose.identity(), intrinsics)
    assert result.mask.sum() == 2
    assert result.mask[8, 12] and tuple(result.rgb[8, 12]) == (255, 0, 0)
    assert result.mask[11, 9] and tuple(result.rgb[11, 9]) == (0, 255, 0)  # v = 100 * 0.05 / 2 + 8 = 10.5 -> 11
    assert result.depth[8, 12] == pytest.approx(2.0)


def test_nearest_point_wins_and_ties_go_to_the_lower_index() -> None:
    points = np.array([[0, 0, 3.0], [0, 0, 2.0], [0, 0, 2.5], [0.5, 0, 2.0], [0.5, 0, 2.0]], dtype=np.float32)
    colors = np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [5, 5, 5]], dtype=np.uint8)
    for backend in ("numba", "torch"):
        result = render_points(points, colors, Pose.identity(), INTRINSICS, backend=backend)
        centre = (round(INTRINSICS.cy), round(INTRINSICS.cx))
        assert result.rgb[centre][0] == 2 and result.depth[centre] == pytest.approx(2.0)
        v, u = np.argwhere(result.rgb[..., 0] >= 4)[0]
        assert result.rgb[v, u, 0] == 4


def test_points_behind_near_or_beyond_far_are_dropped() -> None:
    points = np.array([[0, 0, -1.0], [0, 0, 0.0005], [0, 0, 5.0], [0, 0, 1.0]], dtype=np.float32)
    colors = np.full((4, 3), 9, np.uint8)
    result = render_points(points, colors, Pose.identity(), INTRINSICS, far_m=4.0)
    assert result.mask.sum() == 1
    assert result.depth[result.mask][0] == pytest.approx(1.0)


def test_pose_moves_the_camera_not_the_points() -> None:
    pose = Pose.look_at([0.0, 0.0, 0.0], [5.0, 0.0, 0.0])  # looking along world +x, Z up
    points = np.array([[5.0, 0.0, 0.0]], dtype=np.float32)
    result = render_points(points, np.array([[7, 8, 9]], np.uint8), pose, INTRINSICS)
    v, u = np.argwhere(result.mask)[0]
    assert (u, v) == (80, 60)  # 79.5 and 59.5 round up
    assert result.depth[v, u] == pytest.approx(5.0)


@pytest.mark.parametrize("splat", ["pixel", "footprint"])
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_and_numba_paths_agree_exactly(splat: str, seed: int) -> None:
    points, colors, sizes = _random_cloud(20_000, seed)
    pose = Pose.look_at([0.2, -0.1, -0.5], [0.0, 0.3, 3.0], up=[0.0, -1.0, 0.0])
    options = {"splat": splat, "point_size_m": sizes if splat == "footprint" else None, "max_radius_px": 6}
    reference = splat_points(points, pose, INTRINSICS, colors=colors, backend="numba", **options)
    assert reference.mask.float().mean() > 0.3
    for device in _devices():
        other = splat_points(torch.from_numpy(points).to(device), pose, INTRINSICS, colors=torch.from_numpy(colors),
                             backend="torch", **options)
        assert torch.equal(other.index.cpu(), reference.index)
        assert torch.equal(other.depth.cpu(), reference.depth)
        assert torch.equal(other.rgb.cpu(), reference.rgb)


def test_footprint_scalar_size_matches_per_point_size() -> None:
    points, colors, _ = _random_cloud(5_000, 3)
    a = render_points(points, colors, Pose.identity(), INTRINSICS, splat="footprint", point_size_m=0.03)
    b = render_points(points, colors, Pose.identity(), INTRINSICS, splat="footprint",
                      point_size_m=np.full(len(points), 0.03, np.float32))
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)


def _plane_scene() -> tuple[np.ndarray, np.ndarray, float]:
    """A red plane at 0.4 m sampled on a 2 cm grid, in front of a dense blue wall at 3 m."""
    spacing = 0.02
    g = np.arange(-0.1, 0.1 + 1e-9, spacing)
    near = np.stack(np.meshgrid(g, g, indexing="xy"), axis=-1).reshape(-1, 2)
    near = np.concatenate([near, np.full((len(near), 1), 0.4)], axis=1)
    f = np.arange(-3.0, 3.0, 0.005)
    far = np.stack(np.meshgrid(f, f, indexing="xy"), axis=-1).reshape(-1, 2)
    far = np.concatenate([far, np.full((len(far), 1), 3.0)], axis=1)
    points = np.concatenate([near, far]).astype(np.float32)
    colors = np.concatenate([np.tile([[200, 0, 0]], (len(near), 1)), np.tile([[0, 0, 200]], (len(far), 1))])
    return points, colors.astype(np.uint8), spacing


def test_footprint_leaves_no_see_through_holes_on_a_close_plane() -> None:
    points, colors, spacing = _plane_scene()
    intrinsics = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)
    # The plane spans x, y in [-0.1, 0.1] at z = 0.4 (10 pixels between its points): every pixel within 0.09 m of
    # its centre must see it.
    v, u = np.mgrid[0:120, 0:160]
    interior = (np.abs((u - 79.5) / 200 * 0.4) < 0.09) & (np.abs((v - 59.5) / 200 * 0.4) < 0.09)
    pixel = render_points(points, colors, Pose.identity(), intrinsics)
    red_pixel = pixel.rgb[..., 0] == 200
    assert red_pixel[interior].mean() < 0.2  # one pixel per point: mostly see-through to the blue wall

    for backend in ("numba", "torch"):
        foot = render_points(points, colors, Pose.identity(), intrinsics, splat="footprint", point_size_m=spacing,
                             backend=backend)
        assert np.all(foot.rgb[interior, 0] == 200) and np.all(foot.rgb[interior, 2] == 0)
        assert np.allclose(foot.depth[interior], 0.4, atol=1e-6)  # the true depth, not the falloff-biased one
        outside = (np.abs((u - 79.5) / 200 * 0.4) > 0.12) | (np.abs((v - 59.5) / 200 * 0.4) > 0.12)
        assert np.all(foot.rgb[outside, 2] == 200)  # the wall around the plane is still seen, without holes


def test_footprint_radius_grows_as_the_surface_comes_closer() -> None:
    point = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)
    color = np.array([[50, 60, 70]], np.uint8)
    covered = []
    for distance in (4.0, 1.0, 0.25):
        pose = Pose(np.eye(3), [0.0, 0.0, -distance])
        result = render_points(point, color, pose, INTRINSICS, splat="footprint", point_size_m=0.05)
        covered.append(int(result.mask.sum()))
    # 0.05 m at f = 120: 1.5, 6 and 24 pixels wide -> half-widths 1, 3, 12 -> squares of 3, 7, 25 pixels.
    assert covered == [9, 49, 625]


def test_footprint_is_capped_by_max_radius() -> None:
    point = np.array([[0.0, 0.0, 0.1]], dtype=np.float32)
    result = render_points(point, np.array([[1, 2, 3]], np.uint8), Pose.identity(), INTRINSICS, splat="footprint",
                           point_size_m=1.0, max_radius_px=2)
    assert result.mask.sum() == 25


def test_empty_cloud_renders_nothing() -> None:
    result = render_points(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), Pose.identity(), INTRINSICS)
    assert not result.mask.any() and result.rgb.shape == (120, 160, 3)


def test_bad_inputs_raise_naming_the_value() -> None:
    points, colors, _ = _random_cloud(10, 0)
    with pytest.raises(InvalidInputError, match="shape"):
        render_points(points[:, :2], colors, Pose.identity(), INTRINSICS)
    with pytest.raises(InvalidInputError, match="uint8"):
        render_points(points, colors.astype(np.float32), Pose.identity(), INTRINSICS)
    with pytest.raises(InvalidInputError, match="point_size_m"):
        render_points(points, colors, Pose.identity(), INTRINSICS, splat="footprint")
    with pytest.raises(InvalidInputError, match="'disc'"):
        render_points(points, colors, Pose.identity(), INTRINSICS, splat="disc")
    with pytest.raises(InvalidInputError, match="backend"):
        render_points(points, colors, Pose.identity(), INTRINSICS, backend="opengl")


def test_pixel_mode_depth_matches_open3d() -> None:
    o3d = load_open3d()
    points, colors, _ = _random_cloud(30_000, 5)
    pose = Pose.look_at([0.3, 0.2, -1.0], [0.0, 0.0, 3.0], up=[0.0, -1.0, 0.0])
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(points))
    cloud.point.colors = o3d.core.Tensor(colors.astype(np.float32) / 255.0)
    image = cloud.project_to_rgbd_image(
        INTRINSICS.width, INTRINSICS.height, o3d.core.Tensor(INTRINSICS.matrix), o3d.core.Tensor(pose.inverse_matrix()),
        depth_scale=1.0, depth_max=100.0,
    )
    expected = image.depth.as_tensor().numpy().reshape(INTRINSICS.shape)
    ours = render_points(points, colors, pose, INTRINSICS)
    assert np.array_equal(ours.depth, expected)


def test_soft_mode_blends_neighbouring_splats_and_torch_agrees_with_numba() -> None:
    # A fronto-parallel plane sampled every 4 pixels, with alternating colours: hard squares copy one point per
    # square, soft splats ramp between neighbours; both cover the plane, with the same front depth.
    intrinsics = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    spacing = 4 * 2.0 / 100.0
    g = np.arange(-0.7, 0.7, spacing)
    points = np.stack(np.meshgrid(g, g, indexing="xy"), axis=-1).reshape(-1, 2)
    points = np.concatenate([points, np.full((len(points), 1), 2.0)], axis=1).astype(np.float32)
    colors = np.where((np.arange(len(points)) % 2)[:, None] == 0, 40, 220).astype(np.uint8).repeat(3, axis=1)
    hard = render_points(points, colors, Pose.identity(), intrinsics, splat="footprint", point_size_m=spacing)
    soft = render_points(points, colors, Pose.identity(), intrinsics, splat="soft", point_size_m=spacing)
    assert hard.mask.all() and soft.mask.all()
    assert set(np.unique(hard.rgb)) <= {40, 220}
    assert len(np.unique(soft.rgb)) > 4 and soft.rgb.min() >= 40 and soft.rgb.max() <= 220
    assert np.allclose(soft.depth, 2.0, atol=1e-5)
    other = render_points(torch.from_numpy(points), torch.from_numpy(colors), Pose.identity(), intrinsics,
                          splat="soft", point_size_m=spacing, backend="torch")
    assert np.array_equal(other.mask, soft.mask)
    assert np.abs(other.rgb.astype(int) - soft.rgb.astype(int)).max() <= 1
    assert np.allclose(other.depth, soft.depth, atol=1e-5)


def test_soft_mode_keeps_one_pixel_points_exact_and_respects_occlusion() -> None:
    points, colors, spacing = _plane_scene()
    intrinsics = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)
    soft = render_points(points, colors, Pose.identity(), intrinsics, splat="soft", point_size_m=spacing)
    v, u = np.mgrid[0:120, 0:160]
    interior = (np.abs((u - 79.5) / 200 * 0.4) < 0.09) & (np.abs((v - 59.5) / 200 * 0.4) < 0.09)
    assert np.all(soft.rgb[interior] == [200, 0, 0])  # the wall behind never bleeds through
    # One point per pixel (footprints of one pixel): nothing to blend, soft equals hard.
    small = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    v, u = np.mgrid[0:48, 0:64]
    z = 2.0 + 0.3 * np.sin(u / 5.0)
    grid = np.stack([(u - 31.5) / 100.0 * z, (v - 23.5) / 100.0 * z, z], axis=-1).reshape(-1, 3).astype(np.float32)
    grid_colors = np.random.default_rng(3).integers(0, 256, (len(grid), 3), dtype=np.uint8)
    sizes = (0.9 * grid[:, 2] / 100.0).astype(np.float32)  # just under a pixel: half-width 0
    a = render_points(grid, grid_colors, Pose.identity(), small, splat="soft", point_size_m=sizes)
    b = render_points(grid, grid_colors, Pose.identity(), small, splat="footprint", point_size_m=sizes)
    assert a.mask.all() and np.array_equal(a.rgb, b.rgb) and np.allclose(a.depth, b.depth, rtol=1e-6)


@pytest.mark.parametrize("splat", ["pixel", "footprint", "soft"])
def test_a_point_in_the_camera_plane_is_culled_not_an_error(splat: str) -> None:
    points = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    colors = np.full((3, 3), 7, np.uint8)
    for backend in ("numba", "torch"):
        result = render_points(points, colors, Pose.identity(), INTRINSICS, splat=splat, backend=backend,
                               point_size_m=None if splat == "pixel" else 0.001)
        assert result.mask.sum() == 1 and result.depth[result.mask][0] == pytest.approx(1.0)


def _landing_pixel(points: np.ndarray) -> np.ndarray:
    """(N,) flat pixel each camera-frame point (identity pose) lands on, in float64 (test points avoid ties)."""
    u = np.floor(INTRINSICS.fx * points[:, 0] / points[:, 2] + INTRINSICS.cx + 0.5).astype(np.int64)
    v = np.floor(INTRINSICS.fy * points[:, 1] / points[:, 2] + INTRINSICS.cy + 0.5).astype(np.int64)
    return v * INTRINSICS.width + u


@pytest.mark.parametrize("splat", ["pixel", "footprint", "soft"])
def test_each_covered_pixel_carries_the_confidence_of_the_point_that_won_it(splat: str) -> None:
    # A near square of 0.4-confidence points in front of a far wall of 0.9-confidence points, off the pixel grid's
    # half-pixel boundaries.
    g = np.linspace(-0.5, 0.5, 41) + 0.0013
    near = np.stack([*np.meshgrid(g * 0.2, g * 0.2), np.full((41, 41), 1.0)], axis=-1).reshape(-1, 3)
    far = np.stack([*np.meshgrid(g * 4, g * 4), np.full((41, 41), 3.0)], axis=-1).reshape(-1, 3)
    points = np.concatenate([far, near]).astype(np.float32)
    colors = np.full((len(points), 3), 100, np.uint8)
    confidence = np.concatenate([np.full(len(far), 0.9), np.full(len(near), 0.4)]).astype(np.float32)
    size = None if splat == "pixel" else 0.05
    results = [render_points(points, colors, Pose.identity(), INTRINSICS, splat=splat, point_size_m=size,
                             confidence=confidence, backend=backend) for backend in ("numba", "torch")]
    winners = splat_points(points, Pose.identity(), INTRINSICS, splat="pixel" if splat == "pixel" else "footprint",
                           point_size_m=size).index.numpy().reshape(-1)
    covered = np.flatnonzero(winners >= 0)
    at_centre = np.zeros(winners.shape, bool)
    at_centre[covered] = _landing_pixel(points.astype(np.float64)[winners[covered]]) == covered
    expected = np.zeros(winners.shape, np.float32)
    expected[at_centre] = confidence[winners[at_centre]]
    for result in results:
        assert np.all(result.confidence[~result.mask] == 0)
        # The pixel a winning point lands on carries its confidence; its footprint's spread carries 0.
        assert np.array_equal(result.confidence.reshape(-1), expected)
        front = result.mask & (result.depth < 2.0)
        assert set(np.unique(result.confidence[front]).tolist()) == {np.float32(0.4)} | ({0.0} if splat != "pixel" else set())
        assert (result.confidence[result.mask & ~front] == np.float32(0.9)).sum() > 100
    assert np.array_equal(results[0].confidence, results[1].confidence)
    if splat != "pixel":  # the far wall's points, 4 pixels apart, cover 3 x 3 pixels each: one is the centre
        back = results[0].mask & (results[0].depth > 2.0)
        assert 0.05 * back.sum() < (results[0].confidence[back] > 0).sum() < 0.5 * back.sum()
    plain = render_points(points, colors, Pose.identity(), INTRINSICS, splat=splat, point_size_m=size)
    assert np.array_equal(plain.confidence > 0, at_centre.reshape(plain.mask.shape))  # no confidence given: 1
    for bad in (np.full(len(points), 1.5, np.float32), np.full(len(points), np.nan, np.float32), confidence[:5]):
        with pytest.raises(InvalidInputError, match="confidence"):
            render_points(points, colors, Pose.identity(), INTRINSICS, splat=splat, point_size_m=size, confidence=bad)


def _render_kernels() -> dict[str, object]:
    """Every numba kernel of the renderer: module-level dispatchers and both compilations of stage 1."""
    kernels = {name: value for name, value in vars(render).items()
               if isinstance(value, numba.core.registry.CPUDispatcher)}
    for parallel, stage in render._ZBUFFER.items():
        kernels[f"_zbuffer (parallel={parallel})"] = stage
    return kernels


def test_every_render_kernel_releases_the_gil() -> None:
    # Worlds are served on threads: a kernel holding the GIL would keep a second world's render off the second core.
    kernels = _render_kernels()
    assert len(kernels) >= 8
    holding = sorted(name for name, kernel in kernels.items() if not kernel.targetoptions.get("nogil"))
    assert not holding, f"kernels without nogil=True: {holding}"


@pytest.mark.parametrize("splat", ["pixel", "footprint", "soft"])
def test_parallel_kernel_gives_the_serial_image(splat: str) -> None:
    points, colors, sizes = _random_cloud(20_000, 7)
    confidence = np.random.default_rng(7).uniform(0, 1, len(points)).astype(np.float32)
    options = {"splat": splat, "point_size_m": None if splat == "pixel" else sizes, "confidence": confidence}
    serial = render_points(points, colors, Pose.identity(), INTRINSICS, **options)
    for threads in (2, 3):
        other = render_points(points, colors, Pose.identity(), INTRINSICS, threads=threads, **options)
        for name in ("rgb", "depth", "mask", "confidence"):
            assert np.array_equal(getattr(other, name), getattr(serial, name)), (threads, name)


@pytest.mark.parametrize("splat", ["pixel", "footprint", "soft"])
@pytest.mark.parametrize("bands", [2, 3, 7])
def test_one_z_buffer_renders_the_same_on_any_split_into_bands(monkeypatch, splat: str, bands: int) -> None:
    # The resolve pass and the soft blend pass split their pixels over the free cores; every band of the blend walks
    # every splat, in point order.
    points, colors, sizes = _random_cloud(20_000, 8)
    confidence = np.random.default_rng(8).uniform(0, 1, len(points)).astype(np.float32)
    pose = Pose.look_at([0.1, 0.0, -0.5], [0.0, 0.2, 3.0], up=[0.0, -1.0, 0.0])

    def render_on(threads: int):
        @contextmanager
        def fixed(requested, limit):
            yield threads

        monkeypatch.setattr(cores, "threads_for", fixed)
        return render_points(points, colors, pose, INTRINSICS, splat=splat,
                             point_size_m=None if splat == "pixel" else sizes, confidence=confidence)

    serial, split = render_on(1), render_on(bands)
    assert serial.mask.sum() > 1000
    for name in ("rgb", "depth", "mask", "confidence"):
        assert np.array_equal(getattr(split, name), getattr(serial, name)), name


def test_renders_on_two_threads_at_once_equal_renders_in_turn() -> None:
    # Each thread keeps its own scratch buffers (z-buffer, blend sums): renders at once must not see each other's.
    clouds = [_random_cloud(8_000 + 1_000 * k, 10 + k) for k in range(4)]
    poses = [Pose.look_at([0.1 * k, 0.0, -0.5], [0.0, 0.2 * k, 3.0], up=[0.0, -1.0, 0.0]) for k in range(4)]
    jobs = [(k, splat) for k in range(4) for splat in ("pixel", "footprint", "soft")] * 3

    def render(job: tuple[int, str]) -> list[np.ndarray]:
        k, splat = job
        points, colors, sizes = clouds[k]
        result = render_points(points, colors, poses[k], INTRINSICS, splat=splat,
                               point_size_m=None if splat == "pixel" else sizes)
        index = splat_points(points, poses[k], INTRINSICS, splat="pixel" if splat == "pixel" else "footprint",
                             point_size_m=None if splat == "pixel" else sizes).index.numpy()
        return [result.rgb, result.depth, result.confidence, index]

    in_turn = [render(job) for job in jobs]
    with ThreadPoolExecutor(2) as pool:
        at_once = list(pool.map(render, jobs))
    for expected, got in zip(in_turn, at_once):
        assert all(np.array_equal(e, g) for e, g in zip(expected, got))


def test_point_order_changes_no_pixel() -> None:
    # The kernels project points in blocks and keep the visible ones: any order of the same points (without depth
    # ties) gives the same images, the index naming the same point.
    points, colors, sizes = _random_cloud(10_007, 11)
    order = np.random.default_rng(11).permutation(len(points))
    for splat, size in (("pixel", None), ("footprint", sizes)):
        a = splat_points(points, Pose.identity(), INTRINSICS, colors=colors, splat=splat, point_size_m=size)
        b = splat_points(points[order], Pose.identity(), INTRINSICS, colors=colors[order], splat=splat,
                         point_size_m=None if size is None else size[order])
        assert torch.equal(a.depth, b.depth) and torch.equal(a.rgb, b.rgb) and torch.equal(a.mask, b.mask)
        hit = b.index >= 0
        assert torch.equal(a.index[hit], torch.from_numpy(order)[b.index[hit]])


def _render_fields(result) -> tuple[np.ndarray, ...]:
    return result.rgb, result.depth, result.mask, result.confidence


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("splat", ["pixel", "footprint", "soft"])
def test_a_render_into_given_arrays_equals_a_render_into_new_ones(backend: str, splat: str) -> None:
    points, colors, sizes = _random_cloud(3000, seed=11)
    confidence = np.random.default_rng(12).uniform(0.1, 1.0, len(points)).astype(np.float32)
    options = dict(splat=splat, point_size_m=None if splat == "pixel" else sizes, backend=backend,
                   confidence=None if splat == "pixel" else confidence)
    pose = Pose.from_matrix(np.eye(4))
    fresh = render_points(points, colors, pose, INTRINSICS, **options)
    h, w = INTRINSICS.shape
    stack = render.RenderBuffers(np.full((2, h, w, 3), 7, np.uint8), np.full((2, h, w), -1.0, np.float32),
                                 np.ones((2, h, w), bool), np.full((2, h, w), 0.5, np.float32))
    into = render_points(points, colors, pose, INTRINSICS, out=render.RenderBuffers(*(a[1] for a in stack)), **options)
    fields = zip(render.RenderBuffers._fields, _render_fields(into), _render_fields(fresh), stack)
    for field, mine, theirs, row in fields:
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), field
        assert np.shares_memory(mine, row[1]), field  # the result holds the given arrays
    assert fresh.mask.any() and not fresh.mask.all()
    assert (stack.depth[0] == -1).all() and (stack.rgb[0] == 7).all()  # the other row untouched


def test_an_empty_render_into_given_arrays_clears_them() -> None:
    h, w = INTRINSICS.shape
    out = render.RenderBuffers(np.full((h, w, 3), 7, np.uint8), np.full((h, w), 2.0, np.float32),
                               np.ones((h, w), bool), np.full((h, w), 0.5, np.float32))
    result = render_points(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), Pose.identity(), INTRINSICS,
                           out=out)
    assert not out.mask.any() and not out.depth.any() and not out.rgb.any() and not out.confidence.any()
    assert result.depth is out.depth


def test_arrays_that_do_not_fit_the_view_are_refused() -> None:
    h, w = INTRINSICS.shape
    points, colors, _ = _random_cloud(10, seed=3)
    good = (np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.float32), np.zeros((h, w), bool),
            np.zeros((h, w), np.float32))
    for index, bad in ((1, np.zeros((h, w), np.float64)), (2, np.zeros((h, w + 1), bool)),
                       (0, np.zeros((h, w * 2, 3), np.uint8)[:, ::2])):
        arrays = list(good)
        arrays[index] = bad
        with pytest.raises(InvalidInputError, match=f"out.{render.RenderBuffers._fields[index]} must be"):
            render_points(points, colors, Pose.identity(), INTRINSICS, out=render.RenderBuffers(*arrays))
