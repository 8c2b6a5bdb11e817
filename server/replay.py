"""Re-run a world's record log and check that it reproduces the world bit for bit.

``worldweave replay LOG`` reads a log that ``worldweave serve --record DIR`` wrote (one per world), rebuilds the
world from the seed in its CreateWorld record, and sends every recorded request, in order, through the same server
code (decoding, the world's lock, the engine) that ran it, in this process, with no network. After each one it
compares what came out with the log: each generated frame's rgb and depth hashes, then the memory version, frame
count and memory hash (voxel map columns and anchors). It stops at the first record that differs and names it (its
number, the step, the frame ids, which hash), or prints "identical" with the counts.

The generator: when the log says "rerun" (a deterministic generator that returns depth, e.g. the default
``continue``), the recorded generator is built again with its recorded options and every step is generated again;
otherwise ("playback") the log kept every step's frames (rgb, fused depth, fusion confidence) and a playback
generator hands them to the world loop, which fuses them again, so memory is checked either way.

A log whose last record was cut short (a crash while writing) or fails its CRC replays up to the record before it and
says where it stopped ("stopped at record N of N: truncated tail at byte B of S").

Exit status: 0 identical, the whole log; 1 a record differs (or fails on replay); 2 the log is unusable (not a record
log, another format version, a damaged header or first record) or a bad argument; 3 identical up to a truncated or
corrupted tail, which is reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.proto.errors import StorageError
from worldweave.server.record_log import LogEnd, LogReader, Record, Recording, RecordKind, WorldRecorder

# The engine (torch, numba) and the server are imported by ``replay``, so that 'worldweave replay --help' stays fast.

EXIT_IDENTICAL, EXIT_DIFFERS, EXIT_UNUSABLE, EXIT_TRUNCATED = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, metavar="LOG",
                        help="a record log: DIR/<world id>.<UTC time>-<hex>.wwlog of 'worldweave serve --record DIR'")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="torch device of the rebuilt world's memory (default: the recording server's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@dataclass
class ReplayReport:
    """What a replay found. ``records``: records replayed (the one that differs included); ``kinds``: how many of
    each kind; ``frames``: frames generated; ``difference``: what differs first (None: nothing did), at record
    ``difference_at``; ``end``: how the log ended (``LogEnd``; its ``problem`` is a truncated or corrupted tail);
    ``memory``: the memory hash and ``version`` after the last record replayed; ``mode``: "rerun" or "playback";
    ``seconds``: wall time of the replay."""

    world_id: str
    mode: str
    generator: str
    records: int = 0
    kinds: Counter = field(default_factory=Counter)
    frames: int = 0
    difference: str | None = None
    difference_at: int | None = None
    end: LogEnd | None = None
    memory: str = ""
    version: int = 0
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        if self.difference is not None:
            return EXIT_DIFFERS
        return EXIT_TRUNCATED if self.end is not None and self.end.problem else EXIT_IDENTICAL

    def describe(self) -> str:
        """One paragraph for the terminal."""
        counts = ", ".join(f"{n} {kind.lower()}" for kind, n in self.kinds.items())
        how = f"generator {self.generator!r} {'re-run' if self.mode == 'rerun' else 'played back from the log'}"
        if self.difference is not None:
            return (f"differs at record {self.difference_at}: {self.difference}\n"
                    f"records 1..{self.difference_at - 1} replayed identical ({how}; {self.seconds:.1f} s)")
        text = (f"identical: {self.records} records ({counts}), {self.frames} frames; memory {self.memory} at version "
                f"{self.version} ({how}; {self.seconds:.1f} s)")
        if self.end is not None and self.end.problem:
            text += f"\n{self.end.describe()}: the records before it replayed identical"
        return text


def replay(path: Path, *, device: str | None = None, progress: bool = False) -> ReplayReport:
    """Replay the log at ``path`` (see the module); ``StorageError`` for an unusable log."""
    import asyncio

    reader = LogReader(path)
    try:
        return asyncio.run(_replay(reader, device, progress))
    finally:
        reader.close()


async def _replay(reader: LogReader, device: str | None, progress: bool) -> ReplayReport:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from worldweave.proto.worldweave.v1 import world_pb2 as pb
    from worldweave.server.limits import ServerLimits
    from worldweave.server.registry import WorldRegistry
    from worldweave.server.service import WorldServicer

    header = reader.header
    generator = _generator(header)
    report = ReplayReport(header.get("world_id", "?"), header.get("replay", "?"), generator.name)
    total = reader.count().records
    check = _Check(report)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worldweave-replay")
    registry = WorldRegistry(generator, executor, device=device or header.get("device", "cpu"),
                             recording=ReplayRecording(check=check))
    servicer = WorldServicer(registry, ServerLimits(**header.get("limits", {})), pb.GetServerInfoResponse())
    checkpoints: dict[str, str] = {}
    started = time.perf_counter()
    bar = tqdm(total=total, unit="record", desc="replaying", disable=not progress, file=sys.stderr)
    try:
        for number, record in reader.records():
            if number == 1 and record.kind is not RecordKind.CREATE:
                raise StorageError(f"{reader.path}: record 1 is a {record.kind.name}, not the world's creation")
            request = record.message()
            request.world_id = header["world_id"]
            if record.kind is RecordKind.STEP:
                request.ClearField("session_id")  # the log holds each step that ran, once: no retries to number
                request.ClearField("sequence")
                if report.mode == "playback":
                    generator.load(record)
            elif record.kind is RecordKind.RESTORE:
                if request.checkpoint_id not in checkpoints:
                    raise StorageError(f"record {number} restores checkpoint {request.checkpoint_id!r}, which no "
                                       "earlier record of the log took")
                request.checkpoint_id = checkpoints[request.checkpoint_id]
            check.expect(number, record)
            response = await _send(servicer, record.kind, request, check)
            report.records = number
            report.kinds[record.kind.name] += 1
            report.frames += len(record.meta.get("frames", ()))
            bar.update()
            if check.difference_at is not None:
                break
            if record.kind is RecordKind.CHECKPOINT:
                checkpoints[record.meta["checkpoint_id"]] = response.checkpoint.checkpoint_id
            report.memory, report.version = record.meta["memory"], record.meta["version"]
    finally:
        bar.close()
        executor.shutdown(wait=True)
    if report.records == 0:
        raise StorageError(f"{reader.path} holds no complete record, not even the world's creation: "
                           f"{reader.end.describe()}")
    report.end = reader.end if check.difference_at is None else None
    report.seconds = time.perf_counter() - started
    return report


# ------------------------------------------------------------------------------------------------ checking


class _Check:
    """The replay side of the recording hook (a ``WorldRecorder``'s log): compares the record each replayed request
    produces with the logged one, and notes the first difference in the report."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report
        self.expected: Record | None = None
        self.number = 0
        self.difference_at: int | None = None

    def expect(self, number: int, record: Record) -> None:
        self.number, self.expected = number, record

    def differs(self, what: str) -> None:
        if self.difference_at is None:
            self.difference_at = self.report.difference_at = self.number
            self.report.difference = what

    def append(self, record: Record) -> None:
        expected = self.expected
        self.expected = None
        if expected is None:  # a request recorded twice: the server's hooks are wrong, not the log
            self.differs("the replayed request recorded more than one record")
            return
        log, again = expected.meta, record.meta
        where = expected.kind.name.lower()
        if expected.kind is RecordKind.STEP:
            ids = [f["frame_id"] for f in log["frames"]]
            where = f"step, frame id {ids[0]}" if len(ids) == 1 else f"step, frame ids {ids[0]}..{ids[-1]}"
            if len(again["frames"]) != len(log["frames"]):
                return self.differs(f"{where}: {len(again['frames'])} frames on replay, {len(log['frames'])} in the log")
            for logged, made in zip(log["frames"], again["frames"]):
                for name in ("frame_id", "rgb", "depth"):
                    if logged[name] != made[name]:
                        return self.differs(f"{where}: frame {logged['frame_id']}'s {name} differs (log "
                                            f"{logged[name]}, replay {made[name]})")
        for name, what in (("version", "memory version"), ("frame_count", "frame count"), ("memory", "memory hash")):
            if log[name] != again[name]:
                return self.differs(f"{where}: the {what} differs (log {log[name]}, replay {again[name]})")

    def close(self) -> None:
        """Nothing to close: the log is the reader's."""


@dataclass(frozen=True)
class ReplayRecording(Recording):
    """The replay's recording policy: every world is recorded into ``check`` (a ``_Check``), its creation first."""

    check: _Check | None = None

    def opener(self, request):
        def open_check(world_id: str, tenant: str, world) -> WorldRecorder:
            recorder = WorldRecorder(self.check)
            recorder.record(world, request, None)
            return recorder

        return open_check


class _Refused(Exception):
    """The servicer refused a replayed request: ``code`` and ``details`` as it would have answered."""

    def __init__(self, code, details: str) -> None:
        super().__init__(f"{code.name}: {details}")


class _Context:
    """What the servicer's handlers use of a gRPC call's context in replay: ``abort``, which raises ``_Refused``."""

    async def abort(self, code, details: str) -> None:
        raise _Refused(code, details)


RPC_OF = {RecordKind.CREATE: "CreateWorld", RecordKind.STEP: "Step", RecordKind.REMOVE: "RemoveRegion",
          RecordKind.RECOLOR: "RecolorRegion", RecordKind.INSERT: "InsertPoints", RecordKind.CHECKPOINT: "Checkpoint",
          RecordKind.RESTORE: "RestoreWorld", RecordKind.LABEL: "LabelRegion"}
"""The RPC each record kind's request is sent to."""


async def _send(servicer, kind: RecordKind, request, check: _Check):
    """Send ``request`` to the servicer's RPC for ``kind``; a refusal becomes ``check``'s difference."""
    async def one():
        yield request

    try:
        if kind is RecordKind.STEP:
            response = [response async for response in servicer.Step(one(), _Context())]
        else:
            response = await getattr(servicer, RPC_OF[kind])(request, _Context())
    except _Refused as refused:
        check.differs(f"{kind.name.lower()} failed on replay: {refused}")
        return None
    if check.expected is not None:
        check.differs(f"{kind.name.lower()} ran on replay but recorded nothing")
    return response


# ------------------------------------------------------------------------------------------------ generators


def _generator(header: dict) -> Generator:
    """The generator of a replay: the recorded one built again ("rerun"), or a ``PlaybackGenerator`` with the
    recorded one's contract ("playback")."""
    from worldweave.bridge.generators.registry import create_generator

    recorded = header.get("generator", {})
    if header.get("replay") == "rerun":
        generator = create_generator(recorded["name"], **header.get("generator_options", {}))
        if not (generator.deterministic and generator.returns_depth):
            raise StorageError(f"the log re-runs generator {recorded['name']!r}, which this worldweave does not "
                               "declare deterministic with depth: its frames were not kept, so it cannot be replayed")
        return generator
    if header.get("replay") != "playback":
        raise StorageError(f"the log's header names no replay mode ('rerun' or 'playback'): {header.get('replay')!r}")
    return playback_generator(recorded)


class PlaybackGenerator(Generator):
    """Hands a step's kept frames (``load``) to the world loop in the order it asks for them: per chunk of body poses,
    one call per rig camera (camera 0 first), each for that camera's frames of the chunk, padded by holding the last
    frame as the loop pads poses. Returns the recorded fused depth and fusion confidence, so the world fuses exactly
    what it fused when the log was written. ``playback_generator`` gives it the recorded generator's contract."""

    name = "playback"
    returns_depth = True

    def __init__(self) -> None:
        self._queues: list[list[tuple[np.ndarray, ...]]] = []
        self._calls = 0

    def load(self, record: Record) -> None:
        """The frames of the step ``record`` (kept by a "playback" log) for the next ``World.step``."""
        frames = record.meta["frames"]
        if len(record.arrays) != 3 * len(frames):
            raise StorageError(f"a step of the log kept {len(record.arrays)} arrays for {len(frames)} frames")
        cameras = max((f.get("camera", 0) for f in frames), default=0) + 1
        self._queues = [[] for _ in range(cameras)]
        for i, f in enumerate(frames):
            self._queues[f.get("camera", 0)].append(record.arrays[3 * i:3 * i + 3])
        self._calls = 0

    def generate(self, condition: Condition) -> GenerationResult:
        queue = self._queues[self._calls % len(self._queues)] if self._queues else []
        self._calls += 1
        taken = queue[:len(condition)]
        del queue[:len(condition)]
        if not taken:
            raise StorageError("the world asked for more frames than the log kept for this step")
        taken += [taken[-1]] * (len(condition) - len(taken))
        return GenerationResult(frames=tuple(t[0] for t in taken), depths=tuple(t[1] for t in taken),
                                confidences=tuple(t[2] for t in taken))


PLAYBACK_CONTRACT = ("name", "chunk_multiple", "chunk_offset", "max_frames", "max_width", "max_height", "size_multiple")
"""The recorded generator's declarations a ``PlaybackGenerator`` takes over (it always returns depth)."""


def playback_generator(contract: dict) -> PlaybackGenerator:
    """A ``PlaybackGenerator`` declaring the recorded generator's ``contract`` (a log header's ``generator``): its
    name, chunk rule and sizes, so the world loop chunks and pads steps as it did when the log was written."""
    declared = {name: contract[name] for name in PLAYBACK_CONTRACT if name in contract}
    return type("PlaybackGenerator", (PlaybackGenerator,), declared)()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``worldweave replay``: prints the report; the exit status says how it ended (see above)."""
    report = replay(args.log, device=args.device, progress=not args.no_progress)
    print(report.describe())
    return report.exit_status
