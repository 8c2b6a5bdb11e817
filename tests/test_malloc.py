"""``tune_malloc``: numpy stops advising huge pages for large arrays (whose first touch can wait for the kernel to
compact memory)."""

from __future__ import annotations

import numpy as np
import pytest

from worldweave.proto.malloc import tune_malloc


@pytest.fixture
def numpy_hugepage_advice():
    """Restores numpy's huge-page advice after the test."""
    before = np._core.multiarray._get_madvise_hugepage()
    yield
    np._core.multiarray._set_madvise_hugepage(before)


def test_tune_malloc_turns_off_numpy_huge_page_advice(numpy_hugepage_advice):
    np._core.multiarray._set_madvise_hugepage(True)
    tune_malloc()
    assert np._core.multiarray._get_madvise_hugepage() is False
