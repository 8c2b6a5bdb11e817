"""Robust scale-and-shift alignment of estimated depth to the memory render."""

import numpy as np
import pytest

from worldweave.bridge.generators.depth import (
    MIN_ALIGNMENT_PIXELS,
    DepthPrediction,
    align_depth,
)
from worldweave.proto.errors import InvalidFrameError, PreconditionError


def scene_depth(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:60, 0:80]
    return (2.0 + 0.02 * u + 0.01 * v + 0.3 * np.sin(u / 7.0) + rng.uniform(0, 0.01, (60, 80))).astype(np.float32)


def covered(fraction: float, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(60, 80)) < fraction


def test_relative_depth_is_recovered_despite_outliers():
    truth = scene_depth()
    relative = (truth - 1.5) / 3.0
    reference = truth.copy()
    mask = covered(0.5)
    outliers = covered(0.1, seed=2) & mask
    reference[outliers] = 0.3  # a foreground object the memory does not know about
    aligned = align_depth(DepthPrediction(relative, "depth"), reference, mask)
    np.testing.assert_allclose(aligned, truth, rtol=1e-3)


def test_disparity_is_fitted_in_inverse_depth():
    truth = scene_depth()
    disparity = 5.0 / truth + 0.7
    aligned = align_depth(DepthPrediction(disparity, "disparity"), truth, covered(0.3))
    np.testing.assert_allclose(aligned, truth, rtol=1e-3)


def test_metric_prediction_gets_its_scale_corrected_and_survives_no_coverage():
    truth = scene_depth()
    aligned = align_depth(DepthPrediction(truth * 1.25, "metric"), truth, covered(0.4))
    np.testing.assert_allclose(aligned, truth, rtol=1e-2)
    untouched = align_depth(DepthPrediction(truth * 1.25, "metric"), truth, np.zeros_like(truth, bool))
    np.testing.assert_allclose(untouched, truth * 1.25)


def test_relative_depth_without_coverage_and_shape_mismatch_are_errors():
    truth = scene_depth()
    few = np.zeros_like(truth, bool)
    few.flat[: MIN_ALIGNMENT_PIXELS - 1] = True
    with pytest.raises(PreconditionError, match="covered pixels"):
        align_depth(DepthPrediction(truth, "depth"), truth, few)
    with pytest.raises(InvalidFrameError, match="must match"):
        align_depth(DepthPrediction(truth[:10], "depth"), truth, few)


def test_negative_results_become_unknown():
    truth = scene_depth()
    relative = truth.copy()
    relative[0, 0] = -100.0
    aligned = align_depth(DepthPrediction(relative, "depth"), truth, covered(0.5))
    assert aligned[0, 0] == 0.0 and np.all(aligned >= 0)
