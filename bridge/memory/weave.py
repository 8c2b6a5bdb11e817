"""The per-pixel weaver: several anchors' renders of one view -> one condition.

For each pixel of the target view:

1. **Depth test with a tolerance.** The nearest depth any anchor rendered is the front surface, except that
   between anchors made from seed frames (captures whose poses drift against one another) a less relevant anchor's
   nearer surface hides the most relevant one's only where it is wider than that drift (at least
   ``occluder_span_rel`` of the view's width both ways: ``weave_stack.front_surfaces``); anchors whose depth lies
   within ``depth_tolerance_rel * z + depth_tolerance_m`` of the front agree, the rest are occluded there (or, in
   front of it, a drift sliver).
2. **Weights** for the agreeing anchors: the anchor's confidence, times the similarity of viewing directions
   ``exp(-(angle / angle_scale_deg)^2)`` (angle at the surface point between the ray from the anchor's camera and
   the ray from the target camera), times ``1 / (1 + (distance / distance_scale_m)^2)`` (distance from the anchor's
   camera to the surface point: nearer views sampled it more finely and with less depth noise), times
   ``rank_decay ** r`` for the anchor's retrieval rank ``r`` (0 = most relevant): where the most relevant anchor
   sees the surface it dominates, and the others mostly fill what it does not see. Anchors fused at different times
   disagree by millimetres to centimetres of pose (drift), so weaving them at equal weight ghosts edges; on real
   RGB-D the rank decay gains 0.1-0.9 dB at the same coverage (``worldweave eval rgbd``, 7-Scenes development data).
3. **Blend**: ``"weighted"`` averages the agreeing anchors' colour and depth with those weights; ``"best"`` takes
   the single highest-weight anchor. Where one anchor alone agrees, both take its colour, depth and confidence as
   they are (an average over one weight could miss its depth by a float32 ulp), and no weight is computed.

Two modes (``WeaveOptions.mode``) choose the weights of step 2: ``"heuristic"`` (above) and ``"learned"``
(``bridge/memory/weaver_net.py``, AnchorWeave's controller): a small network trained with ``worldweave train weaver``
corrects the heuristic's log weights per pixel and anchor, may leave a pixel a hole ("none": nothing there should be
trusted), and scales each anchor's colour by a gain estimated from the anchors' overlaps with one another
(``bridge/memory/weave_gains.py``). It runs only where two or more anchors render a pixel; a pixel one anchor alone
renders takes that anchor's colour (times its gain) and depth.

Everything here is computed from the anchors and the target *pose*; no target image or depth enters (the
target is only ever scored). Output: woven RGB, depth (metres), the covered mask (any anchor rendered the pixel)
and the confidence channel, blended like depth from the agreeing anchors' rendered point confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from worldweave.bridge.cores import split_call
from worldweave.bridge.frames import RenderResult
from worldweave.bridge.memory.weave_stack import (
    AnchorFacts,
    WeaveStack,
    agrees,
    anchor_view,
    check_renders,
    front_point,
    kernel_inputs,
    stack_renders,
)
from worldweave.bridge.memory.weaver_net import learned_weights, load_weaver
from worldweave.bridge.pixel_values import to_byte
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

BlendMode = Literal["weighted", "best"]
WeaveMode = Literal["heuristic", "learned"]
_WEIGHT_FLOOR = 1e-6
"""Smallest weight of an agreeing anchor, so extreme angles or distances never divide by zero."""
_WEAVE_CHUNK = 1024
"""Pixels whose geometry, weights and blend the heuristic weave computes together (small enough to stay in cache)."""


@dataclass(frozen=True)
class WeaveOptions:
    """Tolerances and weights of the weaver, and how anchors are splatted for it."""

    depth_tolerance_rel: float = 0.03
    """Anchors within this fraction of the front depth (plus ``depth_tolerance_m``) agree at a pixel."""
    depth_tolerance_m: float = 0.02
    """Absolute part of the depth tolerance, metres."""
    occluder_span_rel: float = 0.025
    """Between anchors made from seed frames: the fraction of the view's width a less relevant anchor's nearer
    surface must span, across and down, to hide a more relevant anchor's surface (the box's radius is
    ``occluder_radius``). Narrower slivers are the drift between captures' poses (mm-cm: several pixels at
    640x480); 0: any nearer surface hides."""
    angle_scale_deg: float = 20.0
    """Viewing-direction difference (degrees) at which an anchor's weight falls to 1/e."""
    distance_scale_m: float = 2.0
    """Camera-to-surface distance (metres) at which an anchor's weight halves."""
    rank_decay: float = 0.1
    """Each retrieval rank further down multiplies an anchor's weight by this, in (0, 1] (1: rank ignored)."""
    blend: BlendMode = "weighted"
    """``"weighted"``: weighted mean of agreeing anchors; ``"best"``: the highest-weight anchor only."""
    splat: Literal["footprint", "soft"] = "soft"
    """How anchor points (and voxels, in ``global`` mode) are splatted: flat squares, or squares blended smoothly
    over the front surface (see ``bridge.render``)."""
    footprint_scale: float = 1.0
    """Multiplier of each anchor point's footprint when it is splatted (see ``bridge.render``)."""
    footprint_falloff: float = 0.02
    """Relative depth penalty at a footprint's edge (see ``bridge.render``)."""
    mode: WeaveMode = "heuristic"
    """``"heuristic"``: the weights above; ``"learned"``: the weaver network of ``weights``."""
    weights: str = "default"
    """Learned mode: weights shipped in the package by name (``"default"``), or the path of a ``.safetensors`` file
    written by ``worldweave train weaver``."""
    learned_stride: int = 1
    """Learned mode: run the network on every competing pixel (1), or on every ``s``-th row and column and carry its
    weights to the pixels between, per anchor only where that anchor shows the same surface as at the sample
    (edge-aware), about ``s * s`` times cheaper."""
    none_threshold: float = 0.5
    """Learned mode: a pixel is left a hole when the "none" slot's weight exceeds this (1: never)."""

    def __post_init__(self) -> None:
        if not 0 <= self.occluder_span_rel <= 1:
            raise InvalidInputError(f"occluder_span_rel must be in [0, 1], got {self.occluder_span_rel}")
        if not (self.depth_tolerance_rel >= 0 and self.depth_tolerance_m >= 0):
            raise InvalidInputError(
                f"depth tolerances must be >= 0, got {self.depth_tolerance_rel}, {self.depth_tolerance_m}"
            )
        if not (self.angle_scale_deg > 0 and self.distance_scale_m > 0 and self.footprint_scale > 0):
            raise InvalidInputError(
                f"need angle_scale_deg, distance_scale_m, footprint_scale > 0; got {self.angle_scale_deg}, "
                f"{self.distance_scale_m}, {self.footprint_scale}"
            )
        if not 0 < self.rank_decay <= 1:
            raise InvalidInputError(f"rank_decay must be in (0, 1], got {self.rank_decay}")
        if self.splat not in ("footprint", "soft"):
            raise InvalidInputError(f"splat must be 'footprint' or 'soft', got {self.splat!r}")
        if self.blend not in ("weighted", "best"):
            raise InvalidInputError(f"blend must be 'weighted' or 'best', got {self.blend!r}")
        if self.footprint_falloff < 0:
            raise InvalidInputError(f"footprint_falloff must be >= 0, got {self.footprint_falloff}")
        if self.mode not in ("heuristic", "learned"):
            raise InvalidInputError(f"weave mode must be 'heuristic' or 'learned', got {self.mode!r}")
        if not (isinstance(self.learned_stride, int) and 1 <= self.learned_stride <= 8):
            raise InvalidInputError(f"learned_stride must be an integer in 1..8, got {self.learned_stride!r}")
        if not 0 < self.none_threshold <= 1:
            raise InvalidInputError(f"none_threshold must be in (0, 1], got {self.none_threshold}")

    def occluder_radius(self, width: int) -> int:
        """Radius (pixels) of the box a nearer surface must fill to hide a more relevant anchor's, in a view
        ``width`` pixels wide: a box at least ``occluder_span_rel * width`` across."""
        return int(self.occluder_span_rel * width) // 2


def heuristic_weights(stack: WeaveStack, confidences: np.ndarray, options: WeaveOptions) -> np.ndarray:
    """(A, P) float32 heuristic weights (module docstring, step 2): 0 where an anchor does not agree with the front."""
    weight = np.empty(stack.depth.shape, dtype=np.float32)
    args = (stack.agree, stack.cos, stack.dist_anchor, _priors(confidences, options),
            np.float32(options.angle_scale_deg), np.float32(options.distance_scale_m), weight)
    split_call(_heuristic_kernel, _heuristic_bands, len(stack.pixels), *args)
    return weight


def _priors(confidences: np.ndarray, options: WeaveOptions) -> np.ndarray:
    """(A,) float32: each anchor's confidence times ``rank_decay`` to the power of its retrieval rank."""
    return (np.asarray(confidences, np.float32)
            * np.array([options.rank_decay**a for a in range(len(confidences))], np.float32)).astype(np.float32)


@numba.njit(cache=True, nogil=True, inline="always")
def _heuristic_weight(cos, dist_anchor, prior, angle_scale, distance_scale):
    """An agreeing anchor's weight (float32) from the cosine between its ray and the target's at the front point,
    its camera's distance to that point (metres) and its ``prior`` (``_priors``)."""
    angle = np.float32(np.degrees(np.arccos(cos))) / angle_scale
    distance = dist_anchor / distance_scale
    w_a = np.exp(-(angle * angle)) / (np.float32(1.0) + distance * distance)
    return max(w_a * prior, np.float32(_WEIGHT_FLOOR))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _heuristic_kernel(first, stop, agree, cos, dist_anchor, priors, angle_scale, distance_scale, weight):
    """Fill columns ``first .. stop - 1`` of ``weight`` (A, P) float32 from the stack's depth test and geometry and
    per-anchor ``priors``."""
    for a in range(agree.shape[0]):
        for j in range(first, stop):
            if agree[a, j]:
                weight[a, j] = _heuristic_weight(cos[a, j], dist_anchor[a, j], priors[a], angle_scale, distance_scale)
            else:
                weight[a, j] = 0.0


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _heuristic_bands(bands, agree, cos, dist_anchor, priors, angle_scale, distance_scale, weight):
    """``_heuristic_kernel`` for the bands of stacked pixels ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _heuristic_kernel(bands[t], bands[t + 1], agree, cos, dist_anchor, priors, angle_scale, distance_scale, weight)


def blend(stack: WeaveStack, weights: np.ndarray, mode: BlendMode, gains: np.ndarray | None = None,
          covered: np.ndarray | None = None) -> RenderResult:
    """One view from the stack: per pixel the ``weights`` (A, P) mean (``"weighted"``) or the highest-weight anchor
    (``"best"``) of the anchors' colour times their ``gains`` (A,) (``None``: 1) and of their depth. Pixels where
    ``covered`` (P,) bool is False (``None``: all covered) are left holes. The confidence channel is blended like
    depth from the anchors' rendered point confidences (summed in float64, so one agreeing anchor's confidence comes
    back exactly: 0.4 must not re-fuse as 0.40000004). Depth and confidence are blended only over the anchors whose
    rendered confidence there is above 0 (a point of theirs lands on the pixel) when there are any: an anchor's
    footprint spread (confidence 0, ``bridge.render``) shows a depth off the surface, which must neither bend a
    landed point's depth nor be fused at a share of its confidence. Where only spreads agree, their blend has
    confidence 0. Where one anchor alone has a weight above 0, its colour (times its gain), depth and confidence
    come back exactly."""
    h, w = stack.shape
    gains = np.ones(stack.count, np.float32) if gains is None else np.asarray(gains, np.float32)
    covered = np.ones(len(stack.pixels), bool) if covered is None else covered
    out_rgb = np.zeros((h * w, 3), np.uint8)
    out_depth = np.zeros(h * w, np.float32)
    out_confidence = np.zeros(h * w, np.float32)
    mask = np.zeros(h * w, bool)
    args = (stack.pixels, stack.rgb, stack.depth, stack.confidence, weights, gains, covered, mode == "best", out_rgb,
            out_depth, out_confidence, mask)
    split_call(_blend_kernel, _blend_bands, len(stack.pixels), *args)
    return RenderResult(out_rgb.reshape(h, w, 3), out_depth.reshape(h, w), mask.reshape(h, w),
                        out_confidence.reshape(h, w))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _blend_kernel(first, stop, pixels, rgb, depth, confidence, weights, gains, covered, best, out_rgb, out_depth,
                  out_confidence, mask):
    """Write the blended colour (computed in float32, stored rounded half to even and clipped to 0..255), depth,
    confidence and mask of each covered pixel among stacked pixels ``first .. stop - 1``."""
    if best:  # the mode is chosen once, outside the loop: a branch on it per pixel makes the loop slower
        for j in range(first, stop):
            if covered[j]:
                mask[pixels[j]] = True
                _blend_best(rgb, depth, confidence, j, weights, j, gains, out_rgb, out_depth, out_confidence,
                            pixels[j])
    else:
        for j in range(first, stop):
            if covered[j]:
                mask[pixels[j]] = True
                _blend_weighted(rgb, depth, confidence, j, weights, j, gains, out_rgb, out_depth, out_confidence,
                                pixels[j])


@numba.njit(cache=True, nogil=True, inline="always")
def _blend_best(rgb, depth, confidence, j, weights, k, gains, out_rgb, out_depth, out_confidence, p):
    """Write output pixel ``p``'s colour, depth and confidence (``blend``'s ``"best"`` rule) from the
    highest-weight anchor's ``rgb[a, j]``, ``depth[a, j]`` and ``confidence[a, j]``, by weights ``weights[a, k]``."""
    top = 0
    for a in range(1, rgb.shape[0]):
        if weights[a, k] > weights[top, k]:
            top = a
    _take_anchor(rgb, depth, confidence, j, top, gains, out_rgb, out_depth, out_confidence, p)


@numba.njit(cache=True, nogil=True)  # numba-inlined (inline="always"), it made the heuristic weave up to 2x slower
def _take_anchor(rgb, depth, confidence, j, a, gains, out_rgb, out_depth, out_confidence, p):
    """Write output pixel ``p``'s colour, depth and confidence as anchor ``a``'s ``rgb[a, j]`` (times its gain),
    ``depth[a, j]`` and ``confidence[a, j]`` (clipped to 0..1), exactly."""
    for c in range(3):
        out_rgb[p, c] = to_byte(rgb[a, j, c] * gains[a])
    out_depth[p] = depth[a, j]
    out_confidence[p] = min(max(confidence[a, j], np.float32(0.0)), np.float32(1.0))


@numba.njit(cache=True, nogil=True, inline="always")
def _blend_weighted(rgb, depth, confidence, j, weights, k, gains, out_rgb, out_depth, out_confidence, p):
    """Write output pixel ``p``'s colour, depth and confidence (``blend``'s ``"weighted"`` rule) from the anchors'
    ``rgb[a, j]``, ``depth[a, j]`` and ``confidence[a, j]`` with weights ``weights[a, k]``; one anchor alone with a
    weight above 0 gives its own (``_take_anchor``)."""
    count = rgb.shape[0]
    total = np.float32(0.0)
    weighted = 0
    alone = 0
    for a in range(count):
        total += weights[a, k]
        if weights[a, k] > 0:
            weighted += 1
            alone = a
    if weighted == 1:
        _take_anchor(rgb, depth, confidence, j, alone, gains, out_rgb, out_depth, out_confidence, p)
        return
    total = max(total, np.float32(1e-30))
    r = np.float32(0.0)
    g = np.float32(0.0)
    b = np.float32(0.0)
    z = np.float32(0.0)
    landed_z = np.float32(0.0)
    landed = np.float32(0.0)
    conf = 0.0
    for a in range(count):
        wa = weights[a, k]
        r += wa * (rgb[a, j, 0] * gains[a])
        g += wa * (rgb[a, j, 1] * gains[a])
        b += wa * (rgb[a, j, 2] * gains[a])
        z += wa * depth[a, j]
        if confidence[a, j] > 0 and wa > 0:
            landed_z += wa * depth[a, j]
            landed += wa
            conf += np.float64(wa) * np.float64(confidence[a, j])
    out_rgb[p, 0] = to_byte(r / total)
    out_rgb[p, 1] = to_byte(g / total)
    out_rgb[p, 2] = to_byte(b / total)
    if landed > 0:
        out_depth[p] = landed_z / landed
        out_confidence[p] = min(max(conf / np.float64(landed), 0.0), 1.0)
    else:
        out_depth[p] = z / total
        out_confidence[p] = 0.0


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _blend_bands(bands, pixels, rgb, depth, confidence, weights, gains, covered, best, out_rgb, out_depth,
                 out_confidence, mask):
    """``_blend_kernel`` for the bands of stacked pixels ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _blend_kernel(bands[t], bands[t + 1], pixels, rgb, depth, confidence, weights, gains, covered, best, out_rgb,
                      out_depth, out_confidence, mask)


def weave_heuristic(renders: Sequence[RenderResult], facts: AnchorFacts, pose: Pose, intrinsics: Intrinsics,
                    options: WeaveOptions) -> RenderResult:
    """The heuristic mode's view, the same as ``blend(stack, heuristic_weights(stack, ...), options.blend)`` on
    ``stack_renders``' stack, in one pass over the covered pixels that keeps no stack: each pixel's front surface,
    agreeing anchors, weights and blend are computed together from the A ``renders``."""
    h, w = intrinsics.shape
    inputs = kernel_inputs(renders, facts.positions, pose, intrinsics, options.depth_tolerance_rel,
                           options.depth_tolerance_m, options.occluder_radius(intrinsics.width), facts.seeded)
    out_rgb = np.zeros((h * w, 3), np.uint8)
    out_depth = np.zeros(h * w, np.float32)
    out_confidence = np.zeros(h * w, np.float32)
    mask = np.zeros(h * w, bool)
    split_call(_weave_heuristic_kernel, _weave_heuristic_bands, len(inputs[0]), *inputs,
               _priors(facts.confidences, options), np.float32(options.angle_scale_deg),
               np.float32(options.distance_scale_m), options.blend == "best", out_rgb, out_depth, out_confidence,
               mask)  # the covered pixels split evenly over the threads; each depends on itself alone
    # The kernel writes only covered pixels, from the renders' checked values (blended depth and confidence stay in
    # their ranges); tests/test_weave.py holds it to ``blend``'s checked result, bit for bit.
    return RenderResult.unchecked(out_rgb.reshape(h, w, 3), out_depth.reshape(h, w), mask.reshape(h, w),
                                  out_confidence.reshape(h, w))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _weave_heuristic_kernel(first, stop, pixels, depth_all, mask_all, rgb_all, confidence_all, front_all,
                            tolerance_scale, tolerance_m, fx, fy, cx, cy, width, rotation, offsets, priors, angle_scale,
                            distance_scale, best, out_rgb, out_depth, out_confidence, mask):
    """Write the output pixels ``pixels[first .. stop - 1]`` (flat, row-major; each covered by some anchor) of
    ``weave_heuristic``, ``_WEAVE_CHUNK`` pixels at a time: their depth test, then, where two or more anchors agree,
    their geometry and their weights anchor by anchor (the arccos and exp of one weight do not wait for the previous
    weight's), then their blend. A pixel one anchor alone agrees on takes that anchor's own values, as its weight
    alone above 0 does in either blend, so it needs no geometry or weight."""
    count = depth_all.shape[0]
    agree = np.empty((count, _WEAVE_CHUNK), np.bool_)
    cos = np.empty((count, _WEAVE_CHUNK), np.float32)
    to_anchor = np.empty((count, _WEAVE_CHUNK), np.float32)
    weights = np.empty((count, _WEAVE_CHUNK), np.float32)
    alone = np.empty(_WEAVE_CHUNK, np.int64)  # the one agreeing anchor, or -1 where several agree
    gains = np.ones(count, np.float32)
    for start in range(first, stop, _WEAVE_CHUNK):
        size = min(_WEAVE_CHUNK, stop - start)
        for i in range(size):
            p = pixels[start + i]
            front = front_all[p]
            agreeing = 0
            for a in range(count):
                agree[a, i] = agrees(mask_all[a, p], depth_all[a, p], front, tolerance_scale, tolerance_m)
                if agree[a, i]:
                    agreeing += 1
                    alone[i] = a
            if agreeing == 1:
                continue
            alone[i] = -1
            tx, ty, tz, to_target = front_point(p, front, width, fx, fy, cx, cy, rotation)
            for a in range(count):
                if agree[a, i]:
                    to_anchor[a, i], cos[a, i] = anchor_view(tx, ty, tz, to_target, offsets[a, 0], offsets[a, 1],
                                                             offsets[a, 2])
        for a in range(count):
            for i in range(size):
                weights[a, i] = (_heuristic_weight(cos[a, i], to_anchor[a, i], priors[a], angle_scale, distance_scale)
                                 if agree[a, i] and alone[i] < 0 else np.float32(0.0))
        for i in range(size):
            p = pixels[start + i]
            mask[p] = True
            if alone[i] >= 0:
                _take_anchor(rgb_all, depth_all, confidence_all, p, alone[i], gains, out_rgb, out_depth,
                             out_confidence, p)
            elif best:
                _blend_best(rgb_all, depth_all, confidence_all, p, weights, i, gains, out_rgb, out_depth,
                            out_confidence, p)
            else:
                _blend_weighted(rgb_all, depth_all, confidence_all, p, weights, i, gains, out_rgb, out_depth,
                                out_confidence, p)


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _weave_heuristic_bands(bands, pixels, depth_all, mask_all, rgb_all, confidence_all, front_all, tolerance_scale,
                           tolerance_m, fx, fy, cx, cy, width, rotation, offsets, priors, angle_scale, distance_scale,
                           best, out_rgb, out_depth, out_confidence, mask):
    """``_weave_heuristic_kernel`` for the bands of covered pixels ``bands[t] .. bands[t + 1] - 1``, one thread
    each."""
    for t in numba.prange(len(bands) - 1):
        _weave_heuristic_kernel(bands[t], bands[t + 1], pixels, depth_all, mask_all, rgb_all, confidence_all,
                                front_all, tolerance_scale, tolerance_m, fx, fy, cx, cy, width, rotation, offsets,
                                priors, angle_scale, distance_scale, best, out_rgb, out_depth, out_confidence, mask)


def weave(
    renders: Sequence[RenderResult],
    camera_positions: np.ndarray,
    confidences: Sequence[float],
    pose: Pose,
    intrinsics: Intrinsics,
    options: WeaveOptions = WeaveOptions(),
    *,
    frame_ids: Sequence[int] | None = None,
    seeded: Sequence[bool] | None = None,
) -> RenderResult:
    """Combine A renders of the view at camera-to-world ``pose`` into one ``RenderResult``.

    ``renders[a]`` is anchor ``a`` rendered at ``pose`` with ``intrinsics``, most relevant anchor first (its
    retrieval rank is ``a``); ``camera_positions`` (A, 3) are the anchors' camera centres (world metres);
    ``confidences`` (A,) in (0, 1]. The learned mode also reads ``frame_ids`` (A,), the frames the anchors were made
    from (larger = newer; ``None``: unknown). ``seeded`` (A,) marks the anchors made from seed frames (captures whose
    poses drift against one another: step 1; ``None``: none).
    With no renders, the result is empty.
    """
    count = len(renders)
    positions = np.asarray(camera_positions, dtype=np.float64).reshape(-1, 3)
    if len(positions) != count or len(confidences) != count:
        raise InvalidInputError(
            f"weave needs one camera position and confidence per render: {count} renders, {len(positions)} "
            f"positions, {len(confidences)} confidences"
        )
    facts = AnchorFacts(positions, np.asarray(confidences, np.float32),
                        None if frame_ids is None else np.asarray(frame_ids, np.int64),
                        None if seeded is None else np.asarray(seeded, bool))
    check_renders(renders, facts, intrinsics)
    if count == 0:
        return RenderResult.empty(intrinsics)
    if options.mode == "heuristic":
        return weave_heuristic(renders, facts, pose, intrinsics, options)
    stack = stack_renders(renders, positions, pose, intrinsics, options.depth_tolerance_rel, options.depth_tolerance_m,
                          options.occluder_radius(intrinsics.width), facts.seeded)
    prior = heuristic_weights(stack, facts.confidences, options)
    learned = learned_weights(stack, facts, prior, load_weaver(options.weights), stride=options.learned_stride,
                              none_threshold=options.none_threshold)
    return blend(stack, learned.weights, options.blend, learned.gains, learned.covered)
