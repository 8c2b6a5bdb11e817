"""Saving to disk: atomic folders, arrays without pickle, JSON manifests, binary PLY point clouds.

A saved thing is a folder. ``atomic_folder(target)`` yields a fresh temporary sibling to write into; only when
the writer returns is it swapped in by renames, so a crash (or an exception) mid-save leaves the previous save
untouched. ``resolve_folder`` finishes a swap that a crash interrupted between its two renames. A crash (kill -9)
while writing leaves the temporary folder, ``.NAME.tmp-XXXXXXXX`` beside ``NAME``: the next save of ``NAME`` removes
it, and ``remove_stale_temporaries`` removes every one of a folder (a server does so at start-up).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from worldweave.proto.errors import StorageError

_BACKUP_SUFFIX = ".previous"
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.tmp-[0-9a-f]{8}")
"""Name of the temporary folder ``atomic_folder`` writes target ``NAME`` into: ``.NAME.tmp-`` and 8 hex digits."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(Path(root) / name, "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def remove_stale_temporaries(parent: str | os.PathLike, target_name: str | None = None) -> list[Path]:
    """Delete the temporary folders that interrupted saves (``atomic_folder`` killed mid-write) left in ``parent``:
    those of the target named ``target_name``, or of every target when None. Returns the folders removed.

    Only call it when no save into ``parent`` (of that target) is under way: a folder being written looks the same.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for path in sorted(parent.iterdir()):
        found = _TEMPORARY.fullmatch(path.name)
        if found and path.is_dir() and not path.is_symlink() and target_name in (None, found["target"]):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on normal exit it replaces ``target`` atomically (crash-safe).

    First removes what earlier saves of ``target`` that were killed mid-write left (``remove_stale_temporaries``),
    so saves of one target must not overlap (the server saves a world under its lock).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = target.with_name(target.name + _BACKUP_SUFFIX)
    if backup.exists():
        shutil.rmtree(backup)
    if target.exists():
        os.rename(target, backup)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)


def resolve_folder(target: str | os.PathLike) -> Path:
    """The folder holding the latest complete save at ``target`` (recovering an interrupted swap)."""
    target = Path(target)
    backup = target.with_name(target.name + _BACKUP_SUFFIX)
    if not target.exists() and backup.exists():
        os.rename(backup, target)
    if not target.is_dir():
        raise StorageError(f"no saved folder at {target}")
    return target


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def load_array(folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot read array {path}: {error}") from error


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def read_manifest(folder: Path, kind: str, supported_versions: tuple[int, ...]) -> dict:
    """Read ``manifest.json`` and check that it describes ``kind`` in a format version this code reads."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot read manifest {path}: {error}") from error
    if manifest.get("kind") != kind:
        raise StorageError(f"{path} describes a {manifest.get('kind')!r}, not a {kind!r}")
    if manifest.get("format_version") not in supported_versions:
        raise StorageError(
            f"{path} has format version {manifest.get('format_version')!r}; this worldweave reads {supported_versions}"
        )
    return manifest


def write_ply(path: Path, points_m: np.ndarray, colors: np.ndarray) -> None:
    """Binary little-endian PLY with float32 x, y, z (metres) and uint8 red, green, blue per vertex."""
    n = len(points_m)
    record = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    record["x"], record["y"], record["z"] = (np.asarray(points_m, np.float32)[:, i] for i in range(3))
    record["r"], record["g"], record["b"] = (np.asarray(colors, np.uint8)[:, i] for i in range(3))
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment worldweave point cloud, metres\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(record.tobytes())
