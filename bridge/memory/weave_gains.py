"""Exposure differences between anchors, from where they overlap with one another (never from the target).

Anchors are frames taken at different times; auto-exposure makes the same surface up to ~15 % brighter in one than
in another. Where two anchors agree in depth at a pixel they see the same surface point, so the median of their
log-brightness difference over those pixels measures their relative exposure. ``overlap_log_gains`` solves for one
log-brightness offset per anchor that best explains all pairwise medians (weighted least squares, each pair weighted
by its overlap pixel count, with a small pull to 0 that fixes the free offset at the overlap-weighted mean and leaves
an anchor that overlaps nothing at 0), and returns the log gain that brings each anchor to that mean. Only the anchors'
renders at the target pose enter; the target's own image never does (it is only ever scored).
"""

from __future__ import annotations

import numpy as np

from worldweave.bridge.memory.weave_stack import WeaveStack

MIN_PAIR_PIXELS = 64
"""Pairs overlapping on fewer sampled pixels than this are ignored."""
MAX_SAMPLES = 20_000
"""At most this many covered pixels (evenly strided) are used to estimate gains."""
_DARK, _BRIGHT = 8.0, 248.0
"""Pixels whose luminance (mean of R, G, B, 0..255) lies outside this range say nothing about exposure."""
_PULL = 0.01
"""Strength of the pull towards 0, relative to the mean pair weight."""


def overlap_log_gains(stack: WeaveStack) -> tuple[np.ndarray, np.ndarray]:
    """(A,) float32 natural-log colour gains that bring each anchor to the common exposure, and (A,) float32 the share
    of the sampled pixels where the anchor overlaps another anchor (0..1)."""
    count = stack.count
    gains = np.zeros(count, np.float32)
    share = np.zeros(count, np.float32)
    if count < 2 or len(stack.pixels) == 0:
        return gains, share
    step = max(1, len(stack.pixels) // MAX_SAMPLES)
    agree = stack.agree[:, ::step]
    luminance = stack.rgb[:, ::step].mean(axis=2)
    usable = agree & (luminance >= _DARK) & (luminance <= _BRIGHT)
    log_lum = np.log(np.maximum(luminance, 1.0))
    normal = np.zeros((count, count))
    rhs = np.zeros(count)
    weights = []
    for a in range(count):
        for b in range(a + 1, count):
            both = usable[a] & usable[b]
            n = int(both.sum())
            if n < MIN_PAIR_PIXELS:
                continue
            diff = float(np.median(log_lum[a, both] - log_lum[b, both]))
            normal[a, a] += n
            normal[b, b] += n
            normal[a, b] -= n
            normal[b, a] -= n
            rhs[a] += n * diff
            rhs[b] -= n * diff
            weights.append(n)
    if not weights:
        return gains, share
    offsets = np.linalg.solve(normal + _PULL * float(np.mean(weights)) * np.eye(count), rhs)
    others = usable.sum(axis=0)
    share = ((usable & (others >= 2)).sum(axis=1) / max(usable.shape[1], 1)).astype(np.float32)
    return (-offsets).astype(np.float32), share
