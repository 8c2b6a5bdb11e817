"""When to add or remove a replica: a policy on queue depth (calls open per replica), on a clock passed in.

The front door (``FrontDoor.autoscale_loop``) samples the calls open through it once a second and asks
``Autoscaler.observe`` how many replicas it wants; it then calls ``FrontDoor.scale``, which starts replicas or drains
the last added one (its worlds saved and loaded elsewhere: none is lost). Ray Serve's own autoscaler cannot do this:
it scales a deployment whose replicas it chooses per request, while a world's calls must reach the one replica
holding it (``placement``).

* **Up.** Calls open per replica above ``target_open_per_replica`` for ``up_after_s`` without a break: one replica
  more, up to ``max_replicas``.
* **Down.** Below ``down_fraction`` of the target for ``down_after_s`` without a break: one replica fewer, down to
  ``min_replicas``. Moving worlds costs a save and a load each, so going down waits longer than going up.
* After a change both timers start again, so the next change is judged on the new replica count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worldweave.proto.errors import InvalidInputError


@dataclass(frozen=True)
class AutoscalePolicy:
    """Bounds and thresholds (calls open per replica; seconds)."""

    min_replicas: int
    max_replicas: int
    target_open_per_replica: float = 2.0
    up_after_s: float = 10.0
    down_after_s: float = 60.0
    down_fraction: float = 0.25

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise InvalidInputError(f"autoscaling needs 1 <= min replicas <= max replicas, got {self.min_replicas} "
                                    f"and {self.max_replicas}")
        for name in ("target_open_per_replica", "up_after_s", "down_after_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"autoscaling {name} must be a positive number, got {value!r}")
        if not 0 <= self.down_fraction < 1:
            raise InvalidInputError(f"autoscaling down_fraction must lie in [0, 1), got {self.down_fraction!r}")


class Autoscaler:
    """Feed it ``observe(now_s, open_calls, replicas)`` on one monotonic clock; it answers the replicas wanted."""

    def __init__(self, policy: AutoscalePolicy) -> None:
        self.policy = policy
        self._above_since: float | None = None
        self._below_since: float | None = None

    def observe(self, now_s: float, open_calls: int, replicas: int) -> int:
        """The replica count wanted after seeing ``open_calls`` calls open over ``replicas`` replicas at ``now_s``."""
        policy = self.policy
        if replicas < policy.min_replicas or replicas > policy.max_replicas:  # e.g. a replica lost: back in bounds
            self._above_since = self._below_since = None
            return min(max(replicas, policy.min_replicas), policy.max_replicas)
        per_replica = open_calls / max(replicas, 1)
        above = per_replica > policy.target_open_per_replica
        below = per_replica < policy.down_fraction * policy.target_open_per_replica
        self._above_since = (self._above_since if self._above_since is not None else now_s) if above else None
        self._below_since = (self._below_since if self._below_since is not None else now_s) if below else None
        wanted = replicas
        if above and replicas < policy.max_replicas and now_s - self._above_since >= policy.up_after_s:
            wanted = replicas + 1
        elif below and replicas > policy.min_replicas and now_s - self._below_since >= policy.down_after_s:
            wanted = replicas - 1
        if wanted != replicas:
            self._above_since = self._below_since = None
        return wanted
