"""Frame validation (``bridge.frames``): every depth value that is not a finite distance >= 0 is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.bridge.frames import check_depth
from worldweave.proto.errors import InvalidFrameError


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_depth_names_the_first_invalid_pixel(value: float, dtype: type) -> None:
    depth = np.ones((4, 6), dtype)
    depth[0, 0] = 0.0  # unknown is fine
    depth[2, 5] = value
    depth[3, 1] = value  # the first in row-major order is named
    with pytest.raises(InvalidFrameError, match=rf"depth has an invalid value {value} at pixel \(u=5, v=2\)"):
        check_depth(depth, (4, 6))


def test_check_depth_keeps_valid_depth_as_float32() -> None:
    depth = np.linspace(0.0, 1e6, 24).reshape(4, 6)
    checked = check_depth(depth, (4, 6))
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, depth.astype(np.float32))
