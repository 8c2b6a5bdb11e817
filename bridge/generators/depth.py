"""Depth for fusion when a generator returns none: an estimator's output aligned to the memory render's depth.

An estimator predicts metric depth, relative depth (up to scale and shift) or relative disparity (inverse depth up
to scale and shift). ``align_depth`` fits scale and shift robustly (iteratively reweighted least squares with a
Huber weight, after a median-based start) on pixels the memory covered, so a generated frame lands in the same
metric world as what memory already holds. ``depth_agreement`` turns the aligned depth's agreement with memory into
a per-pixel confidence (the fusion weight of a generator that returns no depth).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np

from worldweave.proto.errors import InvalidFrameError, InvalidInputError, PreconditionError

PredictionKind = Literal["metric", "depth", "disparity"]

MIN_ALIGNMENT_PIXELS = 64
"""Fewer covered pixels than this and no metric prediction: the fit would be meaningless."""
AGREEMENT_TOLERANCE_REL = 0.1
"""``depth_agreement`` falls linearly from 1 (same depth as memory) to 0 at this relative depth difference."""


@dataclass(frozen=True)
class DepthPrediction:
    """An estimator's output for one image: float32 (H, W) ``values`` of the given ``kind``.

    ``metric``: metres along the optical axis. ``depth``: proportional to depth up to an affine map.
    ``disparity``: proportional to inverse depth up to an affine map.
    """

    values: np.ndarray
    kind: PredictionKind


class DepthEstimator(ABC):
    """Monocular depth from an RGB image (uint8 H x W x 3)."""

    @abstractmethod
    def estimate(self, rgb: np.ndarray) -> DepthPrediction:
        """Predict depth for ``rgb``; the result has the image's (H, W)."""


def _robust_affine(x: np.ndarray, y: np.ndarray, iterations: int = 10) -> tuple[float, float]:
    """Scale and shift minimising a Huber loss of ``scale * x + shift - y``."""
    x_med, y_med = np.median(x), np.median(y)
    x_spread = np.median(np.abs(x - x_med))
    scale = np.median(np.abs(y - y_med)) / x_spread if x_spread > 1e-12 else 1.0
    shift = y_med - scale * x_med
    for _ in range(iterations):
        residual = scale * x + shift - y
        delta = max(1.4826 * float(np.median(np.abs(residual))), 1e-6)
        weight = np.minimum(1.0, delta / np.maximum(np.abs(residual), 1e-12))
        design = np.stack([x * weight, weight], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, y * weight, rcond=None)
    return float(scale), float(shift)


def align_depth(prediction: DepthPrediction, reference_depth_m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Metric depth (float32 H x W, metres, 0 = unknown) from ``prediction``, fitted to ``reference_depth_m``.

    ``mask``: bool (H, W), pixels where the reference (the memory render) is trusted. Metric predictions are
    returned as they are when too few pixels are covered, otherwise a robust scale is still fitted (an
    estimator's metric scale drifts). Disparity is fitted in inverse depth. Non-positive results become 0.
    Raises ``PreconditionError`` for a relative prediction with fewer than ``MIN_ALIGNMENT_PIXELS`` covered.
    """
    values = np.asarray(prediction.values, dtype=np.float64)
    reference = np.asarray(reference_depth_m, dtype=np.float64)
    if values.shape != reference.shape or np.asarray(mask).shape != reference.shape:
        raise InvalidFrameError(
            f"prediction {values.shape}, reference {reference.shape} and mask {np.asarray(mask).shape} must match"
        )
    usable = np.asarray(mask, bool) & (reference > 0) & np.isfinite(values)
    if usable.sum() < MIN_ALIGNMENT_PIXELS:
        if prediction.kind == "metric":
            return np.where(values > 0, values, 0).astype(np.float32)
        raise PreconditionError(
            f"cannot align relative depth: {int(usable.sum())} covered pixels, need {MIN_ALIGNMENT_PIXELS}"
        )
    if prediction.kind == "disparity":
        scale, shift = _robust_affine(values[usable], 1.0 / reference[usable])
        inverse = scale * values + shift
        metric = np.where(inverse > 1e-6, 1.0 / np.maximum(inverse, 1e-6), 0.0)
    elif prediction.kind == "metric":
        scale = float(np.median(reference[usable] / np.maximum(values[usable], 1e-6)))
        metric = values * scale
    else:
        scale, shift = _robust_affine(values[usable], reference[usable])
        metric = scale * values + shift
    return np.where(np.isfinite(metric) & (metric > 0), metric, 0).astype(np.float32)


def depth_agreement(
    depth_m: np.ndarray, reference_depth_m: np.ndarray, mask: np.ndarray, tolerance_rel: float = AGREEMENT_TOLERANCE_REL
) -> np.ndarray:
    """Per-pixel confidence, float32 (H, W) in [0, 1], that ``depth_m`` (metres, 0 = unknown; an estimator's depth
    aligned by ``align_depth``) is the surface memory holds: ``1 - |depth - reference| / (tolerance_rel * reference)``
    clipped to [0, 1] where ``mask`` (bool (H, W), memory covered the pixel) and both depths are known; 0 elsewhere,
    since where memory has no depth to compare the estimate is a guess."""
    depth = np.asarray(depth_m, dtype=np.float32)
    reference = np.asarray(reference_depth_m, dtype=np.float32)
    if depth.shape != reference.shape or np.asarray(mask).shape != reference.shape:
        raise InvalidFrameError(f"depth {depth.shape}, reference {reference.shape} and mask {np.asarray(mask).shape} must match")
    if not tolerance_rel > 0:
        raise InvalidInputError(f"tolerance_rel must be > 0, got {tolerance_rel!r}")
    both = np.asarray(mask, bool) & (reference > 0) & (depth > 0)
    safe = np.where(both, reference, 1.0)
    agreement = 1.0 - np.abs(depth - reference) / (tolerance_rel * safe)
    return np.where(both, np.clip(agreement, 0.0, 1.0), 0.0).astype(np.float32)
