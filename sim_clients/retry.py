"""Retrying calls the server refused for load, after the delay it suggested: ``RetryPolicy``, used by ``WorldClient``
and ``AsyncWorldClient`` alike.

A busy server refuses a call it cannot start soon (admission control, ``docs/limits.md``) with RESOURCE_EXHAUSTED and
a suggested delay, the client's turn (trailing metadata ``retry-after-ms``; the error's ``retry_after_s``). The
clients retry such a refusal by default: they wait the suggested delay (times up to ``1 + jitter``) and send the
call again, as long as the wait ends before the call's deadline (``timeout_s``, counted from the first attempt; by
default 60 s) and, if set, at most ``max_attempts`` times in all; then the last refusal is raised,
``LimitExceededError`` with its ``retry_after_s``. Only refusals
that carry a delay are retried (RESOURCE_EXHAUSTED or UNAVAILABLE): a request over a size or work limit carries none
(it would be refused again), and neither does an unreachable server. Pass ``retry=None`` to a client to see every
refusal at once and schedule retries yourself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from worldweave.proto.errors import LimitExceededError, ServerUnavailableError, WorldweaveError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries calls the server refused with a suggested delay (see the module)."""

    max_attempts: int | None = None
    """Most attempts of one call, the first included (1: never retry); None: as many as the call's deadline allows
    (the server spaces its suggested delays at the pace it serves, so a client is refused about once per call)."""
    jitter: float = 0.1
    """Each wait is the suggested delay times a random factor in [1, 1 + jitter]: clients refused together do not
    come back at the same instant, and none comes back before its turn."""

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise ValueError(f"RetryPolicy.max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter!r}")

    def delay_s(self, error: WorldweaveError, attempt: int, deadline: float | None) -> float | None:
        """How long to wait before attempt ``attempt + 1`` after ``error`` ended attempt ``attempt`` (1-based),
        seconds; None when the call is not to be retried: ``error`` is no refusal with a suggested delay, the
        attempts are used up, or the wait would end past ``deadline`` (``time.monotonic()``; None: no deadline)."""
        if not isinstance(error, (LimitExceededError, ServerUnavailableError)) or error.retry_after_s is None:
            return None
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        wait_s = error.retry_after_s * random.uniform(1.0, 1.0 + self.jitter)
        if deadline is not None and time.monotonic() + wait_s >= deadline:
            return None
        return wait_s


def deadline_after(timeout_s: float | None) -> float | None:
    """``time.monotonic()`` ``timeout_s`` seconds from now (None: no deadline)."""
    return None if timeout_s is None else time.monotonic() + timeout_s


def remaining_s(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline), at least a millisecond (grpc refuses a zero timeout)."""
    return None if deadline is None else max(1e-3, deadline - time.monotonic())


def call_with_retry(policy: RetryPolicy | None, timeout_s: float | None, call: Callable[[float | None], T]) -> T:
    """``call(timeout_s_left)``, retried under ``policy`` (None: once) when it raises a refusal with a suggested
    delay; each attempt gets the time left of ``timeout_s`` (None: no deadline)."""
    deadline = deadline_after(timeout_s)
    attempt = 1
    while True:
        try:
            return call(remaining_s(deadline))
        except WorldweaveError as error:
            wait_s = policy.delay_s(error, attempt, deadline) if policy is not None else None
            if wait_s is None:
                raise
        time.sleep(wait_s)
        attempt += 1


async def call_with_retry_async(
    policy: RetryPolicy | None, timeout_s: float | None, call: Callable[[float | None], Awaitable[T]]
) -> T:
    """``await call(timeout_s_left)``, retried as ``call_with_retry`` does."""
    deadline = deadline_after(timeout_s)
    attempt = 1
    while True:
        try:
            return await call(remaining_s(deadline))
        except WorldweaveError as error:
            wait_s = policy.delay_s(error, attempt, deadline) if policy is not None else None
            if wait_s is None:
                raise
        await asyncio.sleep(wait_s)
        attempt += 1
