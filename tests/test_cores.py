"""How many threads a splittable engine call takes (``bridge.cores``): the cores no other engine work holds, of the
process's share of the machine."""

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

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
