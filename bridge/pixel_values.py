"""Pixel values inside numba kernels: one rule for turning a computed colour channel into a stored one."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def to_byte(value):
    """A float32 colour channel as uint8: rounded half to even and clipped to 0..255, the value numpy's
    ``np.clip(np.round(x), 0, 255).astype(np.uint8)`` gives."""
    return np.uint8(min(max(np.rint(value), np.float32(0.0)), np.float32(255.0)))
