"""``reproject``: the embedded default generator. No weights, CPU, deterministic.

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

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.kept_depth import kept_depth

EMPTY_GREY = 128


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


@numba.njit(cache=True)
def _push(summed, weight):
    """One pyramid level down: 2x2 sums (ceil mode) of weighted values and weights."""
    channels, height, width = summed.shape
    out_h, out_w = (height + 1) // 2, (width + 1) // 2
    out_sum = np.zeros((channels, out_h, out_w), np.float32)
    out_w8 = np.zeros((out_h, out_w), np.float32)
    for v in range(height):
        for u in range(width):
            w = weight[v, u]
            if w > 0:
                out_w8[v // 2, u // 2] += w
                for c in range(channels):
                    out_sum[c, v // 2, u // 2] += summed[c, v, u]
    return out_sum, out_w8


@numba.njit(cache=True)
def _pull(summed, weight, coarse):
    """Holes of one level take the bilinear upsampling (half-pixel centres) of the filled coarser level."""
    channels, height, width = summed.shape
    _, coarse_h, coarse_w = coarse.shape
    scale_v, scale_u = coarse_h / height, coarse_w / width
    out = np.empty((channels, height, width), np.float32)
    for v in range(height):
        sv = max((v + 0.5) * scale_v - 0.5, 0.0)
        v0 = min(int(sv), coarse_h - 1)
        v1 = min(v0 + 1, coarse_h - 1)
        fv = sv - v0
        for u in range(width):
            w = weight[v, u]
            if w > 0:
                for c in range(channels):
                    out[c, v, u] = summed[c, v, u] / w
                continue
            su = max((u + 0.5) * scale_u - 0.5, 0.0)
            u0 = min(int(su), coarse_w - 1)
            u1 = min(u0 + 1, coarse_w - 1)
            fu = su - u0
            for c in range(channels):
                top = coarse[c, v0, u0] * (1 - fu) + coarse[c, v0, u1] * fu
                bottom = coarse[c, v1, u0] * (1 - fu) + coarse[c, v1, u1] * fu
                out[c, v, u] = top * (1 - fv) + bottom * fv
    return out


def push_pull_fill_cpu(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """numba twin of ``push_pull_fill`` for float32 (C, H, W) numpy arrays (tested equal)."""
    weight = known.astype(np.float32)
    levels = [(values * weight[None], weight)]
    if known.all():
        return values
    while levels[-1][1].shape != (1, 1) and not (levels[-1][1] > 0).all():
        levels.append(_push(*levels[-1]))
    summed, weight = levels[-1]
    filled = summed / np.maximum(weight, 1e-12)[None]
    for summed, weight in reversed(levels[:-1]):
        filled = _pull(summed, weight, filled.astype(np.float32))
    return filled  # level 0 has weights 0 or 1, so known pixels came back as value * 1 / 1, exactly


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
            known = render.mask & (render.depth > 0)
            depth, confidence = kept_depth(render)
            confidences.append(confidence)
            if not known.any():
                frames.append(np.full((*render.mask.shape, 3), EMPTY_GREY, np.uint8))
                depths.append(np.zeros(render.mask.shape, np.float32))
                continue
            values = np.concatenate([render.rgb.transpose(2, 0, 1).astype(np.float32), render.depth[None]])
            filled = push_pull_fill_cpu(values, known)
            frames.append(np.clip(np.rint(filled[:3]), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy())
            depths.append(np.where(known, depth, filled[3]).astype(np.float32))
        return GenerationResult(tuple(frames), tuple(depths), confidences=tuple(confidences))
