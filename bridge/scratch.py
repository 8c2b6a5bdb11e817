"""Per-thread reusable work buffers for the engine's kernels: a frame rendered or fused on one thread reuses the
same pages instead of faulting in fresh ones each call; two threads (two worlds served at once) never share one."""

from __future__ import annotations

import math
import threading

import numpy as np

_BUFFERS = threading.local()


def thread_scratch(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An array of ``shape`` (contents undefined) in this thread's buffer ``name`` (one name per use: callers pick
    names that do not clash). The buffer lives as long as the thread and grows to the largest request it served."""
    size = math.prod(shape)
    buffer = getattr(_BUFFERS, name, None)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = np.empty(size, dtype)
        setattr(_BUFFERS, name, buffer)
    return buffer[:size].reshape(shape)
