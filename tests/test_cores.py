"""How many threads a splittable engine call takes (``bridge.cores``): the cores no other engine work holds, of the
process's share of the machine."""

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from worldweave.bridge import cores
from worldweave.bridge.cgroup_quota import cgroup_cpu_quota
from worldweave.bridge.core_slots import CoreSlots
from worldweave.bridge.cores import (
    MAX_SPLIT_THREADS,
    even_bands,
    held_cores,
    holding_core,
    holding_every_core,
    limit_cores,
    machine_cores,
    split_call,
    threads_for,
)
from worldweave.server.scheduling import WorldLock, run_locked


def test_a_call_alone_takes_every_core_up_to_its_limit():
    with threads_for(None, 64) as threads:
        assert threads == machine_cores()
        assert held_cores() == machine_cores()
    with threads_for(None, 1) as threads:
        assert threads == 1
    assert held_cores() == 0


def test_a_given_count_is_kept_and_holds_one_core():
    with threads_for(3, 64) as threads:
        assert threads == 3
        assert held_cores() == 1
    assert held_cores() == 0


def test_cores_other_engine_threads_hold_are_not_taken():
    holding, release = threading.Event(), threading.Event()

    def other_engine_work() -> None:
        with holding_core(), holding_core():  # nested: still one core
            holding.set()
            release.wait(10)

    other = threading.Thread(target=other_engine_work)
    other.start()
    try:
        assert holding.wait(10)
        assert held_cores() == 1
        with threads_for(None, 64) as threads:
            assert threads == max(1, machine_cores() - 1)
    finally:
        release.set()
        other.join()
    assert held_cores() == 0


def test_locked_engine_work_holds_a_core():
    async def main() -> int:
        with ThreadPoolExecutor(1) as executor:
            return await run_locked(WorldLock(), executor, held_cores)

    assert asyncio.run(main()) == 1
    assert held_cores() == 0


def test_holding_every_core_leaves_split_calls_one_thread_and_bands_cover_every_item():
    calls = []
    serial = lambda first, stop, out: calls.append(("serial", first, stop))  # noqa: E731
    banded = lambda bands, out: calls.append(("banded", list(bands)))  # noqa: E731
    with holding_every_core():
        assert held_cores() == machine_cores()
        split_call(serial, banded, 10, None)
    assert held_cores() == 0
    split_call(serial, banded, 10, None, limit=1)
    assert calls == [("serial", 0, 10), ("serial", 0, 10)]
    bands = even_bands(10, 3)
    assert list(bands) == [0, 3, 6, 10]
    if machine_cores() > 1:
        split_call(serial, banded, 10, None)
        assert calls[-1] == ("banded", list(even_bands(10, min(machine_cores(), MAX_SPLIT_THREADS))))


def test_engine_work_keeps_numpy_blas_on_the_calling_thread():
    """A fresh process: numpy's BLAS may take every core until the first engine call, then takes the caller's alone
    (its worker threads would spin on cores the count says are free)."""
    script = (
        "from threadpoolctl import threadpool_info, threadpool_limits\n"
        "from worldweave.bridge.cores import holding_core\n"
        "def blas(): return [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "threadpool_limits(limits=2, user_api='blas')\n"
        "before = blas()\n"
        "with holding_core(): inside = blas()\n"
        "print(json.dumps([before, inside, blas()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", "import json\n" + script], capture_output=True, text=True,
                            timeout=120, check=True)
    before, inside, after = json.loads(result.stdout)
    assert before and all(threads == 2 for threads in before)
    assert inside == after == [1] * len(before)


def test_a_process_that_shares_the_machine_counts_its_share():
    """``limit_cores``: a replica given one CPU splits nothing and defaults to one engine thread; None counts every
    core again."""
    from worldweave.server.cluster.replica import replica_cores
    from worldweave.server.scheduling import default_engine_threads

    every = machine_cores()
    try:
        limit_cores(1)
        assert machine_cores() == default_engine_threads() == 1
        with threads_for(None, 64) as threads:
            assert threads == 1
        limit_cores(every + 5)  # more than the process may run on: its cores
        assert machine_cores() == every
    finally:
        limit_cores(None)
    assert machine_cores() == every
    for share in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="whole number"):
            limit_cores(share)
    assert [replica_cores(c) for c in (None, 0.0, 0.5, 1.0, 1.9, 3.0)] == [1, 1, 1, 1, 1, 3]


def _proc_folder(tmp_path, cgroup: str, mounts: list[str]):
    """A /proc/PID folder with the given ``cgroup`` text and ``mountinfo`` lines (mount points under tmp_path)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text("".join(line + "\n" for line in [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw", *mounts]))
    return proc


def _write(folder, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_cgroup_v2_quota_is_the_smallest_on_the_path_to_the_mount(tmp_path):
    mount = tmp_path / "cgroup"
    proc = _proc_folder(tmp_path, "0::/kubepods/pod1/app\n", [
        f"30 22 0:26 / {mount} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate"])
    _write(mount, {"cpu.max": "max 100000\n"})
    _write(mount / "kubepods", {"cpu.max": "400000 100000\n"})
    _write(mount / "kubepods" / "pod1", {"cpu.max": "150000 100000\n"})
    _write(mount / "kubepods" / "pod1" / "app", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(proc) == pytest.approx(1.5)
    (mount / "kubepods" / "cpu.max").write_text("100000 100000\n")  # a parent's smaller quota binds the child
    assert cgroup_cpu_quota(proc) == pytest.approx(1.0)


def test_a_cgroup_v1_quota_is_read_where_a_container_sees_only_its_own_cgroup(tmp_path):
    cpu, unified = tmp_path / "cpu", tmp_path / "unified"
    proc = _proc_folder(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/docker/abc\n", [
        f"27 22 0:23 /docker/abc {cpu} rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct",
        f"28 22 0:24 /docker/abc {tmp_path / 'memory'} rw,nosuid shared:10 - cgroup cgroup rw,memory",
        f"29 22 0:25 /docker/abc {unified} rw,nosuid shared:11 - cgroup2 cgroup2 rw"])
    _write(cpu, {"cpu.cfs_quota_us": "250000\n", "cpu.cfs_period_us": "100000\n"})
    unified.mkdir()  # hybrid hierarchy: no cpu.max in the unified mount
    assert cgroup_cpu_quota(proc) == pytest.approx(2.5)


def test_no_quota_set_or_none_readable_is_none(tmp_path):
    mount = tmp_path / "cpu"
    proc = _proc_folder(tmp_path, "2:cpu,cpuacct:/\n0::/\n", [
        f"27 22 0:23 / {mount} rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct"])
    _write(mount, {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(proc) is None
    assert cgroup_cpu_quota(tmp_path / "no-such-proc") is None


def test_counted_cores_never_exceed_the_quota_rounded_down(monkeypatch):
    every = machine_cores()
    monkeypatch.setattr(cores, "_quota_cores", lambda: 1)
    assert machine_cores() == 1
    with threads_for(None, 64) as threads:
        assert threads == 1
    monkeypatch.setattr(cores, "_quota_cores", lambda: every + 8)
    assert machine_cores() == every


NODE_PROCESS = """
import sys
from pathlib import Path
from worldweave.bridge.cores import holding_core, limit_cores, share_node_cores, threads_for
limit_cores(1)  # a replica's share: its default engine threads, not how far its splits go
share_node_cores(Path(sys.argv[1]))
for line in sys.stdin:
    if line.strip() == "hold":
        with holding_core():
            print("holding", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    else:
        with threads_for(None, 64) as threads:
            print(threads, flush=True)
"""


def _node_process(path):
    return subprocess.Popen([sys.executable, "-c", NODE_PROCESS, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _ask(process, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_processes_counting_with_the_node_split_over_the_cores_none_of_them_holds(tmp_path):
    path, cores = tmp_path / "cores", machine_cores()
    one, other, gone = _node_process(path), _node_process(path), _node_process(path)
    try:
        assert _ask(one, "threads") == str(cores)  # alone: every core, past its share of 1
        assert _ask(other, "hold") == "holding"
        assert _ask(one, "threads") == str(max(1, cores - 1))
        assert _ask(other, "done") == "released"
        assert _ask(one, "threads") == str(cores)
        assert _ask(gone, "hold") == "holding"
        gone.kill()  # killed while holding: its slot counts nothing
        gone.wait(10)
        assert _ask(one, "threads") == str(cores)
    finally:
        for process in (one, other, gone):
            process.kill()
            process.wait(10)


def test_a_slot_is_one_process_own_and_free_again_once_it_leaves_or_is_gone(tmp_path):
    path = tmp_path / "cores"
    mine, beside = CoreSlots(path), CoreSlots(path)
    assert mine.index != beside.index
    mine.publish(3)
    assert beside.others_held() == 3 and mine.others_held() == 0
    mine.leave()
    assert beside.others_held() == 0
    assert CoreSlots(path).index == mine.index  # a left slot is taken again
    gone = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from worldweave.bridge.core_slots import CoreSlots; "
                           "s = CoreSlots(Path(sys.argv[1])); s.publish(5); print(s.index)", str(path)],
                          capture_output=True, text=True, check=True)
    assert beside.others_held() == 0  # its process exited without leaving: counted as nothing
    assert CoreSlots(path).index == int(gone.stdout)  # and its slot is taken again


def test_a_node_file_that_cannot_be_made_leaves_the_process_counting_its_share_alone(tmp_path):
    code = ("import logging, sys; from pathlib import Path; logging.basicConfig(); "
            "from worldweave.bridge.cores import limit_cores, share_node_cores, threads_for; "
            "limit_cores(1); share_node_cores(Path(sys.argv[1]))\n"
            "with threads_for(None, 64) as threads: print(threads)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "no-such-folder" / "cores")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"
    assert "counting cores alone, not with the node's other processes" in done.stderr
