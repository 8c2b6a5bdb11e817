"""The embedded reproject generator: exact where memory covers, complete everywhere, numba equal to torch."""

import numpy as np
import pytest
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition
from worldweave.bridge.generators.kept_depth import kept_depth
from worldweave.bridge.generators.checker import check_generator
from worldweave.bridge.generators.reproject import (
    EMPTY_GREY,
    ReprojectGenerator,
    push_pull_fill,
    push_pull_fill_cpu,
)
from worldweave.proto.geometry import Intrinsics, Pose


@pytest.mark.parametrize("shape", [(48, 64), (37, 23), (1, 1), (5, 3), (2, 9)])
def test_numba_push_pull_equals_the_torch_reference(shape):
    rng = np.random.default_rng(sum(shape))
    values = rng.uniform(0, 255, (4, *shape)).astype(np.float32)
    known = rng.uniform(size=shape) < 0.4
    known.flat[0] = True
    expected = push_pull_fill(torch.from_numpy(values), torch.from_numpy(known)).numpy()
    np.testing.assert_allclose(push_pull_fill_cpu(values, known), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape, share", [((600, 500), 0.3), ((97, 131), 0.02), ((64, 64), 0.9), ((3, 700), 0.1)])
def test_the_small_levels_in_one_kernel_equal_the_pyramid_level_by_level(shape, share):
    """Bit for bit, against the pyramid pushed and pulled one level at a time (``_push`` / ``_pull``): the levels
    below ``MIN_SPLIT_PIXELS`` run in one kernel call (the first two of the largest image here are above it), with the
    same arithmetic."""
    from worldweave.bridge.generators import reproject

    rng = np.random.default_rng(shape[0])
    values = rng.uniform(0, 255, (3, *shape)).astype(np.float32)
    known = rng.uniform(size=shape) < share
    known.flat[-1] = True
    weight = known.astype(np.float32)
    levels = [(values * weight[None], weight)]
    while levels[-1][1].shape != (1, 1) and not (levels[-1][1] > 0).all():
        levels.append(reproject._push(*levels[-1], finest=len(levels) == 1))
    summed, top = levels[-1]
    expected = summed / np.maximum(top, 1e-12)[None]
    for level in range(len(levels) - 2, -1, -1):
        expected = reproject._pull(*levels[level], expected, finest=level == 0)
    assert np.array_equal(push_pull_fill_cpu(values, known), expected)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_the_fill_is_c_contiguous_whatever_the_layout_it_is_handed(share):
    """A caller's kernel compiles once per layout it is handed: the fill's result is C-contiguous even when every
    pixel is known and it is the input itself (a transposed view, as ``continue`` hands it)."""
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 255, (9, 7, 3)).astype(np.float32).transpose(2, 0, 1)
    known = rng.uniform(size=(9, 7)) < share
    known.flat[0] = True
    filled = push_pull_fill_cpu(values, known)
    assert filled.flags.c_contiguous and filled.dtype == np.float32
    np.testing.assert_array_equal(filled[:, known], values[:, known])


def test_fill_keeps_known_pixels_and_interpolates_holes_smoothly():
    v, u = np.mgrid[0:40, 0:60]
    ramp = np.stack([u * 2.0, v * 3.0, u + v, 1.0 + 0.01 * u]).astype(np.float32)
    known = np.ones((40, 60), bool)
    known[10:30, 20:45] = False
    filled = push_pull_fill_cpu(ramp, known)
    np.testing.assert_array_equal(filled[:, known], ramp[:, known])
    hole = ~known
    lo, hi = ramp[:, known].min(axis=1, keepdims=True), ramp[:, known].max(axis=1, keepdims=True)
    assert np.all((filled[:, hole] >= lo - 1e-3) & (filled[:, hole] <= hi + 1e-3)), "fills stay in the known range"
    assert np.abs(filled[:, hole] - ramp[:, hole]).mean() < 0.15 * np.ptp(ramp, axis=(1, 2)).mean()


def condition(masks: list[np.ndarray]) -> Condition:
    h, w = masks[0].shape
    intrinsics = Intrinsics.from_fov(w, h, fov_x_deg=60.0)
    rng = np.random.default_rng(1)
    renders = tuple(
        RenderResult(
            np.where(m[..., None], rng.integers(0, 256, (h, w, 3)), 0).astype(np.uint8),
            np.where(m, rng.uniform(1, 4, (h, w)), 0).astype(np.float32),
            m,
        )
        for m in masks
    )
    return Condition(tuple(Pose.identity() for _ in masks), intrinsics, renders)


def test_generate_is_exact_where_covered_complete_elsewhere_and_grey_when_blind():
    rng = np.random.default_rng(2)
    partial = rng.uniform(size=(24, 32)) < 0.5
    blind = np.zeros((24, 32), bool)
    cond = condition([partial, blind])
    result = ReprojectGenerator().generate(cond)
    covered = cond.renders[0]
    np.testing.assert_array_equal(result.frames[0][partial], covered.rgb[partial])
    np.testing.assert_array_equal(result.depths[0][partial], covered.depth[partial])
    assert np.all(result.depths[0] > 0), "every pixel of a partly covered view gets a depth"
    assert np.all(result.frames[1] == EMPTY_GREY) and np.all(result.depths[1] == 0)


def test_reproject_passes_the_generator_checker():
    check_generator(ReprojectGenerator())


def test_kept_depth_refits_footprint_pixels_on_planes_and_leaves_silhouettes_unfused():
    """Pixels where memory's points land keep their depth and confidence; a footprint pixel between them takes the
    plane they lie on (inverse depth affine in the image: exact), with their lowest confidence; across a depth step
    (a silhouette) no plane fits and the footprint pixels stay unfused."""
    h, w = 40, 50
    v, u = np.mgrid[:h, :w]
    true_depth = (1.0 / (0.3 + 0.002 * u - 0.003 * v)).astype(np.float32)  # a tilted plane
    confidence = np.zeros((h, w), np.float32)
    confidence[::3, ::3], confidence[1::3, 2::3] = 1.0, 0.7  # where memory's points land
    smeared = np.where(confidence > 0, true_depth, 1.03 * true_depth).astype(np.float32)  # footprints: off the plane
    render = RenderResult(np.zeros((h, w, 3), np.uint8), smeared, np.ones((h, w), bool), confidence)
    depth, fused = kept_depth(render)
    landed = confidence > 0
    assert np.array_equal(depth[landed], true_depth[landed]) and np.array_equal(fused[landed], confidence[landed])
    inner = np.zeros((h, w), bool)
    inner[3:-3, 3:-3] = True
    assert np.all(fused[inner] > 0) and np.allclose(depth[inner], true_depth[inner], rtol=1e-5)
    assert np.all(fused[inner & ~landed] == np.float32(0.7)), "the lowest confidence of the landed pixels near it"
    step = np.where(u < 25, 2.0, 3.0).astype(np.float32)
    depth, fused = kept_depth(RenderResult(np.zeros((h, w, 3), np.uint8), step, np.ones((h, w), bool), confidence))
    near_edge = (np.abs(u - 24.5) < 2) & ~landed
    assert np.all(fused[near_edge] == 0) and np.array_equal(depth[fused > 0], step[fused > 0])
