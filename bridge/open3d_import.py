"""Open3D, imported with the libusb-1.0 it links taken from the ``libusb-package`` wheel.

Open3D's Linux wheels link ``libusb-1.0.so.0`` (for RealSense cameras) without shipping it. Rather than asking for
the system package, :func:`load_open3d` first loads the copy in the ``libusb-package`` wheel, whose soname is the
same, so the dynamic loader reuses it when Open3D's library asks for it. Every Open3D import in worldweave (engine,
tests, benchmarks) goes through here.
"""

from __future__ import annotations

import ctypes
import functools
from types import ModuleType


@functools.cache
def load_open3d() -> ModuleType:
    """The ``open3d`` module, after loading the wheel's libusb-1.0 (once per process)."""
    import libusb_package

    library = libusb_package.get_library_path()
    if library is not None:  # None only on platforms the wheel has no library for: the system's is used there
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    import open3d

    return open3d
