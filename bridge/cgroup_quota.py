"""The CPU quota of a process's cgroup: how many CPUs' worth of time a container's CPU limit lets it run (Docker's
``--cpus`` and Kubernetes' ``limits.cpu`` set a CFS quota, and leave the affinity mask at every core of the host).
``bridge.cores`` counts no more cores than it allows.

The process's cgroup paths come from ``/proc/PID/cgroup``, the cgroup mounts from ``/proc/PID/mountinfo``; a quota is
read from cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, on the process's cgroup and
every parent the mount shows (a parent's smaller quota binds its children).
"""

from __future__ import annotations

import os
from pathlib import Path


def _cgroup_paths(proc: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and its cgroup v1 ``cpu`` controller's path (``PROC/cgroup``), None where it has
    none."""
    v2 = v1 = None
    for line in (proc / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _cgroup_mounts(proc: Path) -> list[tuple[str, str, str]]:
    """``(version, root, mount point)`` of each cgroup mount that can hold a CPU quota (``PROC/mountinfo``): every
    cgroup2 mount ("2") and each cgroup v1 mount of the ``cpu`` controller ("1"). ``root`` is the cgroup path the
    mount shows at its mount point (a container's own cgroup, where the container sees only its own)."""
    mounts = []
    for line in (proc / "mountinfo").read_text().splitlines():
        mount, _, filesystem = line.partition(" - ")
        fields, fs_fields = mount.split(), filesystem.split()
        if len(fields) < 5 or len(fs_fields) < 3:
            continue
        if fs_fields[0] == "cgroup2":
            mounts.append(("2", fields[3], fields[4]))
        elif fs_fields[0] == "cgroup" and "cpu" in fs_fields[2].split(","):
            mounts.append(("1", fields[3], fields[4]))
    return mounts


def _quota_in(folder: Path, version: str) -> float | None:
    """CPUs the quota file in one cgroup folder allows (quota / period), None where it sets none or has none."""
    try:
        if version == "2":
            quota, period = (folder / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def cgroup_cpu_quota(proc: Path = Path("/proc/self")) -> float | None:
    """CPUs the process's cgroup CPU quota allows it (quota / period: 1.5 lets it run 1.5 cores' worth of time), the
    smallest set on its cgroup or any parent the mount shows, for cgroup v2 and v1; None where none is set or none can
    be read (no cgroups, not Linux). ``proc`` is the process's ``/proc`` folder."""
    try:
        v2, v1 = _cgroup_paths(proc)
        mounts = _cgroup_mounts(proc)
    except (OSError, ValueError):
        return None
    quotas = []
    for version, root, mount_point in mounts:
        path = v2 if version == "2" else v1
        if path is None:
            continue
        inside = os.path.relpath(path, root) if (path + "/").startswith(root.rstrip("/") + "/") else "."
        folder, top = Path(mount_point, inside).resolve(), Path(mount_point).resolve()
        while True:
            quota = _quota_in(folder, version)
            if quota is not None:
                quotas.append(quota)
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return min(quotas, default=None)
