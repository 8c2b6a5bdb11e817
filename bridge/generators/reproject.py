"""``reproject``: an embedded generator that fills memory's holes with a blur it never fuses. No weights, CPU,
deterministic. (``continue`` is the default: it continues the planes memory holds into the holes.)

Each frame is the woven memory render with its holes filled, RGB and depth, by push-pull inpainting: the covered
pixels are averaged down an image pyramid until every cell has a value, then the coarse values are pulled back
up into the holes only. Covered pixels keep memory's colour, and its depth and confidence as
``kept_depth.kept_depth`` gives them (memory's where its points land; on a footprint's spread, the plane of the landed
pixels around it, or confidence 0 where they fit none), so what memory holds comes back exactly. A view memory does
not cover at all comes back mid-grey with depth 0 (unknown, so nothing is fused).

Confidence: memory's own on the covered pixels (``kept_depth.kept_depth``), 0 on the filled holes: a push-pull blur of the
surrounding depth is a guess, not a surface, so the world shows it but never fuses it.
"""

from __future__ import annotations

from typing import ClassVar

import numba
import numpy as np
import torch
import torch.nn.functional as F

from worldweave.bridge.cores import MAX_SPLIT_THREADS, split_call
from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.kept_depth import kept_depth
from worldweave.bridge.pixel_values import to_byte

EMPTY_GREY = 128
MIN_SPLIT_PIXELS = 1 << 16
"""A push-pull level splits its rows over the free cores (``bridge.cores.split_call``; each output row reads only
its own inputs, so every split gives the same frame), but a coarser level below this many pixels runs on one thread:
starting the threads costs about 50 us a split, more than a split saves below about 64k pixels (a level's push and
pull on 2 cores: 19,200 pixels 205 us on one thread against 290 us split, 76,800 pixels 975 against 810 us). The
finest level splits at any size, so that the warm-up's 32 x 24 world compiles the split kernels before serving."""


def push_pull_fill(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels of ``values`` (C, H, W) from known ones (bool (H, W)); known pixels are kept exactly.

    Push: 2x2 sums of weighted known values and of weights down a pyramid until the coarsest level is covered (or 1x1).
    Pull: from coarse to fine, each level's holes take the bilinearly upsampled coarser level.
    """
    weights = known.to(values.dtype)[None]
    levels = [(values * weights, weights)]
    while levels[-1][1].shape[-1] > 1 or levels[-1][1].shape[-2] > 1:
        summed, w = levels[-1]
        if bool((w > 0).all()):
            break
        pooled_sum = F.avg_pool2d(summed[None], 2, ceil_mode=True, divisor_override=1)[0]
        pooled_w = F.avg_pool2d(w[None], 2, ceil_mode=True, divisor_override=1)[0]
        levels.append((pooled_sum, pooled_w))
    summed, w = levels[-1]
    filled = summed / w.clamp_min(1e-12)
    for summed, w in reversed(levels[:-1]):
        up = F.interpolate(filled[None], size=summed.shape[-2:], mode="bilinear", align_corners=False)[0]
        mean = summed / w.clamp_min(1e-12)
        filled = torch.where(w > 0, mean, up)
    return torch.where(known[None], values, filled)


def _fill_threads(weight: np.ndarray, finest: bool) -> int:
    """Most threads for a pyramid level of weights ``weight`` (H, W): ``MAX_SPLIT_THREADS``, or one for a level under
    ``MIN_SPLIT_PIXELS`` that is not the ``finest``."""
    return MAX_SPLIT_THREADS if finest or weight.size >= MIN_SPLIT_PIXELS else 1


def _push(summed: np.ndarray, weight: np.ndarray, finest: bool) -> tuple[np.ndarray, np.ndarray]:
    """One pyramid level down: 2x2 sums (ceil mode) of weighted values (C, H, W) and weights (H, W) of the
    ``finest`` level or a coarser one."""
    channels, height, width = summed.shape
    out_sum = np.zeros((channels, (height + 1) // 2, (width + 1) // 2), np.float32)
    out_w8 = np.zeros(out_sum.shape[1:], np.float32)
    split_call(_push_rows, _push_bands, out_w8.shape[0], summed, weight, out_sum, out_w8,
               limit=_fill_threads(weight, finest))
    return out_sum, out_w8


@numba.njit(cache=True, nogil=True)
def _push_rows(first, stop, summed, weight, out_sum, out_w8):
    """``_push`` into output rows ``first .. stop - 1`` (zeroed): each cell sums its 2x2 inputs in row-major order."""
    channels, height, width = summed.shape
    for v in range(2 * first, min(2 * stop, height)):
        for u in range(width):
            w = weight[v, u]
            if w > 0:
                out_w8[v // 2, u // 2] += w
                for c in range(channels):
                    out_sum[c, v // 2, u // 2] += summed[c, v, u]


@numba.njit(cache=True, nogil=True, parallel=True)
def _push_bands(bands, summed, weight, out_sum, out_w8):
    """``_push_rows`` for the bands of output rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _push_rows(bands[t], bands[t + 1], summed, weight, out_sum, out_w8)


@numba.njit(cache=True, nogil=True, inline="always")
def _source(i, scale, coarse_size):
    """Where pixel ``i`` of a finer level samples its coarser level (half-pixel centres, ``scale`` = coarse / fine
    size): the two coarse indices and the weight of the second."""
    s = max((i + 0.5) * scale - 0.5, 0.0)
    i0 = min(int(s), coarse_size - 1)
    return i0, min(i0 + 1, coarse_size - 1), s - i0


@numba.njit(cache=True, nogil=True, inline="always")
def _bilinear(coarse, c, v0, v1, fv, u0, u1, fu):
    """Channel ``c`` of ``coarse`` (C, h, w) between rows ``v0``/``v1`` and columns ``u0``/``u1``."""
    top = coarse[c, v0, u0] * (1 - fu) + coarse[c, v0, u1] * fu
    bottom = coarse[c, v1, u0] * (1 - fu) + coarse[c, v1, u1] * fu
    return top * (1 - fv) + bottom * fv


def _pull(summed: np.ndarray, weight: np.ndarray, coarse: np.ndarray, finest: bool) -> np.ndarray:
    """Holes of one level (weighted values (C, H, W), weights (H, W); the ``finest`` level or a coarser one) take the
    bilinear upsampling (half-pixel centres) of the filled coarser level ``coarse`` (C, h, w); the level filled,
    (C, H, W) float32."""
    out = np.empty(summed.shape, np.float32)
    split_call(_pull_rows, _pull_bands, summed.shape[1], summed, weight, coarse, out,
               limit=_fill_threads(weight, finest))
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _pull_bands(bands, summed, weight, coarse, out):
    """``_pull_rows`` for the bands of rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _pull_rows(bands[t], bands[t + 1], summed, weight, coarse, out)


@numba.njit(cache=True, nogil=True)
def _pull_rows(first, stop, summed, weight, coarse, out):
    """``_pull`` of rows ``first .. stop - 1`` into ``out``."""
    channels, height, width = summed.shape
    _, coarse_h, coarse_w = coarse.shape
    scale_v, scale_u = coarse_h / height, coarse_w / width
    for v in range(first, stop):
        v0, v1, fv = _source(v, scale_v, coarse_h)
        for u in range(width):
            w = weight[v, u]
            if w > 0:
                for c in range(channels):
                    out[c, v, u] = summed[c, v, u] / w
                continue
            u0, u1, fu = _source(u, scale_u, coarse_w)
            for c in range(channels):
                out[c, v, u] = _bilinear(coarse, c, v0, v1, fv, u0, u1, fu)


def push_pull_fill_cpu(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """numba twin of ``push_pull_fill`` for float32 (C, H, W) numpy arrays (tested equal); C-contiguous, whatever the
    layout of ``values``. The fill the fused paths (``push_pull_frame``, ``continue``'s fill of unknown pixels) are
    tested equal to; they start ``push_pull`` from their own first level instead."""
    if known.all():
        return np.ascontiguousarray(values)
    weight = known.astype(np.float32)
    return push_pull((values * weight[None], weight))  # level 0's weights are 0 or 1: known pixels come back exactly


def push_pull(first: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The push-pull pyramid from its finest level ``first`` (weighted sums (C, H, W), weights (H, W)): push until a
    level has no hole (or is 1 x 1), then pull back down; returns that finest level filled, (C, H, W) float32. The
    levels of ``MIN_SPLIT_PIXELS`` or more push and pull here, each split over the free cores; below them (one thread
    each) the rest of the pyramid is one kernel call, ``_small_pyramid``."""
    levels = [first]
    while not _filled(levels[-1][1]) and (len(levels) == 1 or levels[-1][1].size >= MIN_SPLIT_PIXELS):
        levels.append(_push(*levels[-1], finest=len(levels) == 1))
    filled = _small_pyramid(*(np.ascontiguousarray(array) for array in levels[-1]))
    for level in range(len(levels) - 2, -1, -1):
        summed, weight = levels[level]
        filled = _pull(summed, weight, filled, finest=level == 0)
    return filled


@numba.njit(cache=True, nogil=True)
def _filled(weight):
    """Whether a pyramid level with weights ``weight`` (H, W) is the last one pushed: no hole, or 1 x 1."""
    return (weight.shape[0] == 1 and weight.shape[1] == 1) or (weight > 0).all()


@numba.njit(cache=True, nogil=True)
def _small_pyramid(summed, weight):
    """``push_pull`` from level (``summed`` (C, H, W), ``weight`` (H, W)) on, on one thread: the same pushes and
    pulls (``_push_rows``, ``_pull_rows``) down to the level with no hole (or 1 x 1) and back; that level filled."""
    sums = [summed]
    weights = [weight]
    while not _filled(weights[-1]):
        level_sum, level_w8 = sums[-1], weights[-1]
        channels, height, width = level_sum.shape
        out_sum = np.zeros((channels, (height + 1) // 2, (width + 1) // 2), np.float32)
        out_w8 = np.zeros(out_sum.shape[1:], np.float32)
        _push_rows(0, out_w8.shape[0], level_sum, level_w8, out_sum, out_w8)
        sums.append(out_sum)
        weights.append(out_w8)
    top_sum, top_w8 = sums[-1], weights[-1]
    filled = np.empty(top_sum.shape, np.float32)
    for c in range(top_sum.shape[0]):
        for v in range(top_sum.shape[1]):
            for u in range(top_sum.shape[2]):
                filled[c, v, u] = top_sum[c, v, u] / max(top_w8[v, u], np.float32(1e-12))
    for level in range(len(sums) - 2, -1, -1):
        out = np.empty(sums[level].shape, np.float32)
        _pull_rows(0, out.shape[1], sums[level], weights[level], filled, out)
        filled = out
    return filled


def _push_frame(rgb: np.ndarray, depth: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_push`` of the first level of a frame: 2x2 sums (ceil mode) of the ``known`` pixels' colour (uint8 (H, W, 3)
    as float32) and depth (float32 (H, W)) as (4, H / 2, W / 2) channels, and of their count; read straight from the
    render, so no weighted (4, H, W) copy of it is made."""
    height, width = known.shape
    out_sum = np.zeros((4, (height + 1) // 2, (width + 1) // 2), np.float32)
    out_w8 = np.zeros(out_sum.shape[1:], np.float32)
    split_call(_push_frame_rows, _push_frame_bands, out_w8.shape[0], rgb, depth, known, out_sum, out_w8)
    return out_sum, out_w8


@numba.njit(cache=True, nogil=True, parallel=True)
def _push_frame_bands(bands, rgb, depth, known, out_sum, out_w8):
    """``_push_frame_rows`` for the bands of output rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _push_frame_rows(bands[t], bands[t + 1], rgb, depth, known, out_sum, out_w8)


@numba.njit(cache=True, nogil=True)
def _push_frame_rows(first, stop, rgb, depth, known, out_sum, out_w8):
    """``_push_frame`` into output rows ``first .. stop - 1`` (zeroed), each cell's 2x2 inputs in row-major order."""
    height, width = known.shape
    for v in range(2 * first, min(2 * stop, height)):
        for u in range(width):
            if known[v, u]:
                out_w8[v // 2, u // 2] += np.float32(1.0)
                for c in range(3):
                    out_sum[c, v // 2, u // 2] += np.float32(rgb[v, u, c])
                out_sum[3, v // 2, u // 2] += depth[v, u]


@numba.njit(cache=True, nogil=True)
def _pull_frame(first, stop, rgb, kept, known, coarse, frame, depth):
    """``_pull`` of the last level's rows ``first .. stop - 1`` straight into the outputs: a ``known`` pixel keeps its
    colour and takes ``kept``'s depth, a hole the bilinear upsampling of the filled coarser level ``coarse``
    (4, h, w), its colour rounded to uint8 (half to even, clipped to 0..255) into ``frame`` (H, W, 3), its depth
    into ``depth`` (H, W)."""
    height, width = known.shape
    _, coarse_h, coarse_w = coarse.shape
    scale_v, scale_u = coarse_h / height, coarse_w / width
    for v in range(first, stop):
        v0, v1, fv = _source(v, scale_v, coarse_h)
        for u in range(width):
            if known[v, u]:
                for c in range(3):
                    frame[v, u, c] = rgb[v, u, c]
                depth[v, u] = kept[v, u]
                continue
            u0, u1, fu = _source(u, scale_u, coarse_w)
            for c in range(4):
                value = np.float32(_bilinear(coarse, c, v0, v1, fv, u0, u1, fu))
                if c == 3:
                    depth[v, u] = value
                else:
                    frame[v, u, c] = to_byte(value)



@numba.njit(cache=True, nogil=True, parallel=True)
def _pull_frame_bands(bands, rgb, kept, known, coarse, frame, depth):
    """``_pull_frame`` for the bands of rows ``bands[t] .. bands[t + 1] - 1``, one thread each."""
    for t in numba.prange(len(bands) - 1):
        _pull_frame(bands[t], bands[t + 1], rgb, kept, known, coarse, frame, depth)

def push_pull_frame(render: RenderResult, kept: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``reproject`` frame of ``render``: uint8 (H, W, 3) colour and float32 (H, W) depth, ``push_pull_fill_cpu``
    of its colour and depth on the ``known`` pixels (some, not all) with the colour rounded to uint8 and ``kept``'s
    depth where known, as ``push_pull_fill_cpu`` and numpy give them (tested equal), without their full-size
    copies: the first push reads the render, the last pull writes the outputs."""
    filled = push_pull(_push_frame(render.rgb, render.depth, known))
    frame = np.empty((*known.shape, 3), np.uint8)
    depth = np.empty(known.shape, np.float32)
    split_call(_pull_frame, _pull_frame_bands, known.shape[0], render.rgb, kept, known, filled.astype(np.float32),
               frame, depth)
    return frame, depth


class ReprojectGenerator(Generator):
    """Memory render with holes inpainted (push-pull), frame by frame; returns depth."""

    name: ClassVar[str] = "reproject"
    chunk_multiple: ClassVar[int] = 1
    chunk_offset: ClassVar[int] = 0
    max_frames: ClassVar[int] = 64
    max_width: ClassVar[int] = 1920
    max_height: ClassVar[int] = 1080
    size_multiple: ClassVar[int] = 1
    returns_depth: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True

    def generate(self, condition: Condition) -> GenerationResult:
        frames, depths, confidences = [], [], []
        for render in condition.renders:
            known = render.kept
            depth, confidence = kept_depth(render)
            confidences.append(confidence)
            if not known.any():
                frames.append(np.full((*render.mask.shape, 3), EMPTY_GREY, np.uint8))
                depths.append(np.zeros(render.mask.shape, np.float32))
                continue
            if known.all():
                frames.append(render.rgb.copy())
                depths.append(depth)
                continue
            frame, depth = push_pull_frame(render, depth, known)
            frames.append(frame)
            depths.append(depth)
        return GenerationResult(tuple(frames), tuple(depths), confidences=tuple(confidences))
