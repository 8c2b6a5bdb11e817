"""The embedded reproject generator: exact where memory covers, complete everywhere, numba equal to torch."""

import numpy as np
import pytest
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition
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
