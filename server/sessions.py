"""Exactly-once steps: per world, each client session numbers its steps 0, 1, 2, ... (``StepRequest.session_id`` and
``sequence``), and each number advances the world once.

``StepSessions.begin(session_id, sequence)`` decides what a numbered request gets:

* the next number of its session: it runs (``Claim.run``), and its answer is kept (the last ``KEPT_RESULTS`` per
  session) for retries;
* a number whose answer is kept: that answer again, the world untouched (``Claim.stored``);
* a number still running (a retry that overtook its first try's reply): it waits for that run and gets its answer
  (``Claim.running``);
* anything else, a gap or a number older than those kept, is ``PreconditionError`` (FAILED_PRECONDITION) naming the
  number the session expects.

A run that fails gives its number back when no later number has started since (the world did not take the step, so
the client may retry it; a retry of a validation error fails again), and its waiters get the same error. The work
of a numbered step is not tied to the call that asked for it: a call cancelled by its deadline leaves the step to
finish and its answer to be kept, which is the point (the reply was lost, not the step).

A session starts at number 0. A world keeps ``MAX_SESSIONS`` sessions and ``MAX_KEPT_BYTES`` of answers; beyond, the
oldest answers and the least recently used idle sessions are dropped
(its next request then gets FAILED_PRECONDITION expecting 0: open a new session). Sessions live with the loaded
world and are not forked; a save keeps them beside the world (``to_bytes``: each session's next number and its kept
answers, as protobuf bytes) and a load brings them back (``from_bytes``), so a retry after a restart or a hand-off
to another server is still answered from its kept answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError, Message

from worldweave.proto.errors import InvalidInputError, PreconditionError, StorageError

KEPT_RESULTS = 8
"""Answers kept per session for retries (the last this many numbers)."""
MAX_SESSIONS = 1024
"""Sessions kept per world; the least recently used idle ones beyond are dropped."""
MAX_KEPT_BYTES = 256 * 2**20
"""Most bytes of kept answers per world (all sessions together, 256 MiB); beyond, the oldest answers are dropped
first (a retry of a dropped one is FAILED_PRECONDITION, as for a number older than those kept)."""
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SESSIONS_MAGIC = b"WWSESS01"
"""First bytes of saved sessions (``StepSessions.to_bytes``): the magic and its format version."""
_U32 = struct.Struct("<I")


def check_session(session_id: str, sequence: int | None) -> tuple[str, int] | None:
    """``(session_id, sequence)`` of a step request, or None for an unnumbered step; ``InvalidInputError`` naming
    what is wrong (one without the other, a malformed id, a number below 0)."""
    if not session_id and sequence is None:
        return None
    if not session_id or sequence is None:
        raise InvalidInputError("an exactly-once step needs both session_id and sequence (or neither)")
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidInputError(f"session_id {session_id[:64]!r} must be 1..64 characters from A-Z, a-z, 0-9, '_' and '-'")
    if sequence < 0:
        raise InvalidInputError(f"sequence must be >= 0 (0 for a session's first step), got {sequence}")
    return session_id, sequence


@dataclass
class _Session:
    next_sequence: int = 0
    results: OrderedDict[int, Sequence[Message]] = field(default_factory=OrderedDict)
    running: dict[int, asyncio.Future] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """What ``StepSessions.begin`` decided: exactly one of ``stored`` (the kept answer), ``running`` (the future of
    the run in progress) and ``run`` (True: this request runs the step and must ``finish`` it)."""

    stored: Sequence[Message] | None = None
    running: asyncio.Future | None = None
    run: bool = False


class StepSessions:
    """The sessions of one world (used on the server's event loop only)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._kept: OrderedDict[tuple[str, int], int] = OrderedDict()
        """Bytes of every kept answer by (session, sequence), oldest first."""
        self.kept_bytes = 0

    def to_bytes(self) -> bytes:
        """The sessions as bytes (nothing pickled): ``SESSIONS_MAGIC``, a uint32 (little-endian) index length, the
        index (JSON: per session, least recently used first, its id, the next number it expects and, per kept answer,
        its number and the byte length of each of its messages), then every message's protobuf bytes in index order.

        A number that has begun but not finished is not kept: the session expects it again (it ran nothing yet when
        the world's lock is held, which is when a save calls this), so a save taken while steps wait for the world's
        lock holds exactly the steps before them."""
        index, blobs = [], []
        for session_id, session in self._sessions.items():
            kept = []
            for sequence, messages in session.results.items():
                encoded = [message.SerializeToString() for message in messages]
                blobs.extend(encoded)
                kept.append([sequence, [len(blob) for blob in encoded]])
            expects = min(session.running) if session.running else session.next_sequence
            index.append([session_id, expects, kept])
        header = json.dumps(index, separators=(",", ":")).encode()
        return b"".join([SESSIONS_MAGIC, _U32.pack(len(header)), header, *blobs])

    @classmethod
    def from_bytes(cls, data: bytes, parse: Callable[[bytes], Message], where: str) -> StepSessions:
        """Sessions from ``to_bytes``'s output; ``parse`` turns a kept message's bytes back into its message
        (``StepResponse.FromString``). ``StorageError`` naming ``where`` when ``data`` is not such bytes."""
        if not data.startswith(SESSIONS_MAGIC):
            raise StorageError(f"{where} does not hold saved step sessions (it does not start with {SESSIONS_MAGIC!r})")
        sessions = cls()
        try:
            (length,) = _U32.unpack_from(data, len(SESSIONS_MAGIC))
            start = len(SESSIONS_MAGIC) + _U32.size
            offset = start + length
            for session_id, expects, kept in json.loads(data[start:offset]):
                session = sessions._sessions[str(session_id)] = _Session(next_sequence=int(expects))
                for sequence, lengths in kept:
                    messages = []
                    for size in lengths:
                        if offset + size > len(data):
                            raise ValueError("a kept answer runs past the end")
                        messages.append(parse(data[offset:offset + size]))
                        offset += size
                    session.results[int(sequence)] = messages
                    sessions._kept[(str(session_id), int(sequence))] = sum(lengths)
                    sessions.kept_bytes += sum(lengths)
        except (ValueError, TypeError, struct.error, DecodeError) as error:
            raise StorageError(f"{where}: saved step sessions are malformed ({error})") from None
        if offset != len(data):
            raise StorageError(f"{where}: saved step sessions are malformed (their lengths do not add up)")
        return sessions

    def _forget(self, session_id: str, sequence: int) -> None:
        self.kept_bytes -= self._kept.pop((session_id, sequence), 0)

    def begin(self, session_id: str, sequence: int) -> Claim:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
            idle = [key for key, kept in self._sessions.items() if not kept.running]
            for key in idle[: max(0, len(self._sessions) - MAX_SESSIONS)]:  # least recently used first
                for kept in self._sessions.pop(key).results:
                    self._forget(key, kept)
        self._sessions.move_to_end(session_id)
        if sequence in session.results:
            return Claim(stored=session.results[sequence])
        if sequence in session.running:
            return Claim(running=session.running[sequence])
        if sequence != session.next_sequence:
            kept = f"; kept answers: {min(session.results)}..{max(session.results)}" if session.results else ""
            why = "skips ahead" if sequence > session.next_sequence else "is older than the answers kept"
            raise PreconditionError(
                f"session {session_id!r} expects sequence {session.next_sequence}; {sequence} {why}{kept}"
            )
        session.next_sequence += 1
        session.running[sequence] = asyncio.get_running_loop().create_future()
        return Claim(run=True)

    def finish(self, session_id: str, sequence: int, result: Sequence[Message] | None,
               error: BaseException | None) -> None:
        """Record how run ``sequence`` ended (its answer, or ``error``) and wake its waiters."""
        session = self._sessions[session_id]  # a session with a run in progress is never dropped
        future = session.running.pop(sequence)
        if error is None:
            session.results[sequence] = result
            size = sum(message.ByteSize() for message in result)
            self._kept[(session_id, sequence)] = size
            self.kept_bytes += size
            while len(session.results) > KEPT_RESULTS:
                self._forget(session_id, session.results.popitem(last=False)[0])
            while self.kept_bytes > MAX_KEPT_BYTES and len(self._kept) > 1:
                (owner, old), _ = next(iter(self._kept.items()))
                self._forget(owner, old)
                self._sessions[owner].results.pop(old, None)
            future.set_result(result)
        else:
            if session.next_sequence == sequence + 1:
                session.next_sequence = sequence  # nothing later started: the number can be used again
            future.set_exception(error)
            future.exception()  # retrieved here: a failure with no waiter is not logged as unretrieved


async def exactly_once(sessions: StepSessions, session_id: str, sequence: int,
                       run: Callable[[], Awaitable[Sequence[Message]]]) -> tuple[Sequence[Message], bool]:
    """``(answer, replayed)`` of step ``sequence`` of ``session_id``: ``run()``'s answer when this call runs it
    (``replayed`` False), else the kept or awaited answer (True). The run continues when this call is cancelled."""
    claim = sessions.begin(session_id, sequence)
    if claim.stored is not None:
        return claim.stored, True
    if claim.running is not None:
        return await asyncio.shield(claim.running), True

    async def settle() -> Sequence[Message]:
        try:
            result = await run()
        except BaseException as error:
            sessions.finish(session_id, sequence, None, error)
            raise
        sessions.finish(session_id, sequence, result, None)
        return result

    task = asyncio.ensure_future(settle())
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved even when no one waits
    return await asyncio.shield(task), False
