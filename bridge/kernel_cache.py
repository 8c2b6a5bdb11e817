"""Where numba keeps the engine's compiled kernels: a folder named by a hash of the engine's sources.

numba's own cache (``cache=True``) is checked against the source file of each kernel only. A kernel that inlines a
function of another module (the hash table's probe, inlined by the voxel map, the queries and the renderer) is not
recompiled when only that other module changes, and its stale machine code then gives wrong answers (a LiDAR scan
found no hits in a changed table). So unless you set ``NUMBA_CACHE_DIR`` yourself, the cache lives in
``$XDG_CACHE_HOME/worldweave/numba/<hash>`` (``~/.cache`` without it), ``<hash>`` being the SHA-256 of every
``.py`` file of the engine (``worldweave.bridge``): any change to any of them starts a fresh cache, and an upgrade
never loads the old version's kernels. Folders of other versions are left alone (several installs may share the
machine); delete ``~/.cache/worldweave/numba`` to reclaim them. Where that folder cannot be made, numba's default
(next to the sources) is kept.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parent
"""The engine package (``worldweave.bridge``) whose sources name the cache."""


def sources_hash(root: Path = ENGINE_ROOT) -> str:
    """The first 16 hex digits of the SHA-256 over every ``.py`` file under ``root`` (relative path and bytes, in
    sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_folder(root: Path = ENGINE_ROOT) -> Path:
    """The kernel cache folder for the engine sources under ``root``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "worldweave" / "numba" / sources_hash(root)


def choose_cache_folder() -> None:
    """Point numba at ``cache_folder()`` unless ``NUMBA_CACHE_DIR`` is set; keep numba's default where the folder
    cannot be made. Runs when the engine is imported, before any kernel is compiled or loaded."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    try:
        folder = cache_folder()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return
    if not os.access(folder, os.W_OK):
        return
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # numba read its settings at import: tell it too
        from numba.core import config

        config.CACHE_DIR = str(folder)
