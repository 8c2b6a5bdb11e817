"""The front door's autoscaling policy on a virtual clock: up on sustained queue depth, down on sustained idleness,
within bounds, one replica at a time."""

from __future__ import annotations

import pytest

from worldweave.proto.errors import InvalidInputError
from worldweave.server.cluster.autoscale import Autoscaler, AutoscalePolicy


def run(scaler: Autoscaler, replicas: int, samples: list[tuple[float, int]]) -> list[int]:
    """Feed ``(now_s, open_calls)`` samples, applying each answer as the new replica count; the counts seen."""
    seen = []
    for now_s, open_calls in samples:
        replicas = scaler.observe(now_s, open_calls, replicas)
        seen.append(replicas)
    return seen


def test_sustained_queue_depth_adds_one_replica_at_a_time_up_to_the_bound():
    scaler = Autoscaler(AutoscalePolicy(min_replicas=1, max_replicas=3, target_open_per_replica=2, up_after_s=10))
    seen = run(scaler, 1, [(float(t), 8) for t in range(0, 41)])
    assert seen[9] == 1 and seen[10] == 2  # above target for 10 s: one more
    assert seen[20] == 2 and seen[21] == 3  # judged anew from the next sample on 2 replicas (4 > 2): 10 s later
    assert seen[-1] == 3  # never past the bound


def test_a_short_burst_or_a_break_in_it_changes_nothing():
    scaler = Autoscaler(AutoscalePolicy(min_replicas=1, max_replicas=4, up_after_s=10, down_after_s=60))
    burst = [(float(t), 10 if t % 9 else 0) for t in range(0, 60)]  # every 9 s the queue empties once
    assert set(run(scaler, 2, burst)) == {2}


def test_sustained_idleness_removes_replicas_down_to_the_bound_and_slower_than_load_adds_them():
    policy = AutoscalePolicy(min_replicas=2, max_replicas=4, target_open_per_replica=2, up_after_s=10,
                             down_after_s=60, down_fraction=0.25)
    seen = run(Autoscaler(policy), 4, [(float(t), 1) for t in range(0, 200)])  # 1 call over 4 replicas: 0.25 < 0.5
    assert seen[59] == 4 and seen[60] == 3
    assert seen[120] == 3 and seen[121] == 2  # judged anew from the next sample on 3 replicas
    assert seen[-1] == 2
    steady = run(Autoscaler(policy), 3, [(float(t), 3) for t in range(0, 200)])  # 1 per replica: neither
    assert set(steady) == {3}


def test_a_count_out_of_bounds_is_brought_back_at_once():
    scaler = Autoscaler(AutoscalePolicy(min_replicas=2, max_replicas=3))
    assert scaler.observe(0.0, 0, 1) == 2  # a replica was lost below the minimum
    assert scaler.observe(1.0, 0, 5) == 3


@pytest.mark.parametrize("kwargs", [dict(min_replicas=0, max_replicas=2), dict(min_replicas=3, max_replicas=2),
                                    dict(min_replicas=1, max_replicas=2, up_after_s=0.0),
                                    dict(min_replicas=1, max_replicas=2, target_open_per_replica=float("nan")),
                                    dict(min_replicas=1, max_replicas=2, down_fraction=1.0)])
def test_bad_settings_are_refused_naming_them(kwargs):
    with pytest.raises(InvalidInputError, match="autoscaling"):
        AutoscalePolicy(**kwargs)
