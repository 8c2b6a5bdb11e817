"""``WatchWorld``: each world's steps, broadcast to the clients watching it (viewers, dashboards), whoever stepped it.

A step of a watched world (``service.WorldServicer._step``) hands its frames to ``Watches.publish`` from under the
world's lock (``loop.call_soon_threadsafe``), so events go out in the order the lock ran the steps. Each event holds
references to the step's arrays (no copy, no encoding on the step's path); each watcher has a bounded queue of
``QUEUE_STEPS`` steps and, when it reads too slowly, loses the oldest step's frames not yet sent, counted in the next
message's ``dropped``: a watcher never slows the stepping client nor holds more than its queue. Thumbnails (the frame and the
memory render it was conditioned on, scaled to the watcher's ``thumbnail_max_width``, JPEG) are made by the watcher's
own stream on the thread pool, once per event and width however many watchers ask.

Anchors: each world's broadcaster (``WorldWatch``) keeps the records (id, frame id, pose, intrinsics) of its world's
anchors once a watcher asked for them: read under the world's lock when that first watcher joins, then kept current
at each step from the anchors it made and the ids the world still holds (an anchor's pose never changes; a restored
checkpoint drops the anchors made after it, and its ids are given again). A watcher that asked gets every anchor in
its first message, after dropped messages and after anchors went away, else the anchors made from each frame.

Tenants: a watch resolves its world id in the caller's tenant (``WorldRegistry.entry``), and broadcasters are keyed
by (tenant, world id) and by the world's entry, so no tenant sees another's steps. A world deleted or unloaded ends
its watches with NOT_FOUND (``WorldEntry.changed`` wakes them; ``WorldEntry.deleted`` says why).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image as PILImage

from worldweave.bridge.world import StepResult, World
from worldweave.proto import codecs as wire
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.codecs import pose_to_proto
from worldweave.server.registry import WorldEntry, WorldKey, WorldRegistry

QUEUE_STEPS = 8
"""Most steps a watcher's queue holds (each of at most ``Limits.max_poses_per_call`` frames); beyond, the oldest
step's unsent frames are dropped (and counted)."""
MAX_THUMBNAIL_WIDTH_PX = 1024
"""Largest ``thumbnail_max_width`` a watch may ask for, pixels."""
THUMBNAIL_JPEG_QUALITY = 80
"""JPEG quality of the thumbnails (1..100)."""


@dataclass(frozen=True)
class AnchorRecord:
    """What a watcher learns of an anchor: ``anchor_id``, the ``frame_id`` it was made from, its camera-to-world
    ``pose`` and its ``intrinsics`` (pixels)."""

    anchor_id: int
    frame_id: int
    pose: Pose
    intrinsics: Intrinsics

    def to_proto(self) -> pb.AnchorInfo:
        return pb.AnchorInfo(anchor_id=self.anchor_id, frame_id=self.frame_id, pose=pose_to_proto(self.pose),
                             intrinsics=wire.intrinsics_message(self.intrinsics))


@dataclass(eq=False)
class FrameEvent:
    """One generated frame of a watched world's step. ``rgb`` and ``memory_rgb`` (uint8 (H, W, 3): the frame and the
    woven memory render it was conditioned on) are the step's own arrays, never written; ``timings_s`` the step's
    stage timings, seconds; ``anchors`` the anchors made from this frame; ``anchor_ids`` the ids of every anchor the
    world holds after the step."""

    version: int
    frame_id: int
    pose: Pose
    intrinsics: Intrinsics
    coverage: float
    rgb: np.ndarray
    memory_rgb: np.ndarray
    timings_s: dict[str, float]
    anchors: tuple[AnchorRecord, ...]
    anchor_ids: frozenset[int]
    thumbnails: dict[int, tuple[pb.Image, pb.Image]] = field(default_factory=dict)
    """Encoded thumbnails by requested width (filled by the first watcher that asks for that width)."""

    def thumbnail_pair(self, max_width_px: int) -> tuple[pb.Image, pb.Image]:
        """The frame and the memory render at most ``max_width_px`` wide, JPEG (made once per width; thread pool)."""
        pair = self.thumbnails.get(max_width_px)
        if pair is None:
            pair = (thumbnail(self.rgb, max_width_px), thumbnail(self.memory_rgb, max_width_px))
            self.thumbnails[max_width_px] = pair
        return pair

    def to_proto(self, max_width_px: int, *, with_anchors: bool) -> pb.WatchWorldResponse:
        """The message of this event (no ``dropped``): thumbnails when ``max_width_px`` > 0, anchors when asked."""
        frame = pb.WatchedFrame(frame_id=self.frame_id, pose=pose_to_proto(self.pose),
                                intrinsics=wire.intrinsics_message(self.intrinsics), coverage=self.coverage)
        if max_width_px:
            picture, memory = self.thumbnail_pair(max_width_px)
            frame.thumbnail.CopyFrom(picture)
            frame.memory_thumbnail.CopyFrom(memory)
        return pb.WatchWorldResponse(
            version=self.version, frame=frame, timings_s=self.timings_s,
            anchors=[a.to_proto() for a in self.anchors] if with_anchors else [],
        )


def thumbnail(rgb: np.ndarray, max_width_px: int) -> pb.Image:
    """uint8 (H, W, 3) RGB scaled (area average) to at most ``max_width_px`` wide, aspect kept, as a JPEG ``Image``."""
    height, width = rgb.shape[:2]
    if width > max_width_px:
        size = (max_width_px, max(1, round(height * max_width_px / width)))
        rgb = np.asarray(PILImage.fromarray(np.ascontiguousarray(rgb), mode="RGB").resize(size, PILImage.BOX))
    return wire.encode_image(rgb, pb.IMAGE_ENCODING_JPEG, jpeg_quality=THUMBNAIL_JPEG_QUALITY)


def anchor_records(world: World, ids: list[int] | None = None) -> list[AnchorRecord]:
    """Records of the world's anchors (those of ``ids`` only, when given); call under the world's lock."""
    store = world.memory.anchors
    anchors = list(store) if ids is None else [store[i] for i in ids]
    return [AnchorRecord(a.id, a.frame_id, a.pose, a.intrinsics) for a in anchors]


def step_events(
    world: World, result: StepResult, cameras: Sequence[Intrinsics], anchors_before: list[int]
) -> list[FrameEvent]:
    """The events of one step: one per frame, with the anchors the step made (ids not in ``anchors_before``) on the
    frame each was made from. ``cameras``: the step's intrinsics by camera index (one without a rig). Call under the
    world's lock, right after ``World.step``."""
    known = set(anchors_before)
    now = world.memory.anchors.ids
    made: dict[int, list[AnchorRecord]] = {}
    for record in anchor_records(world, [i for i in now if i not in known]):
        made.setdefault(record.frame_id, []).append(record)
    ids = frozenset(now)
    return [
        FrameEvent(f.version, f.frame_id, f.pose, cameras[f.camera_index], float(f.coverage), f.rgb, f.condition.rgb,
                   dict(result.timings_s), tuple(made.get(f.frame_id, ())), ids)
        for f in result.frames
    ]


class Watcher:
    """One watch's queue: the frames of at most ``QUEUE_STEPS`` steps; when full, the oldest step's unsent frames are
    dropped (and counted). Event loop only."""

    def __init__(self) -> None:
        self.steps: deque[deque[FrameEvent]] = deque()
        self.dropped = 0
        self.anchors_gone = False
        """Set when anchors the watcher was sent went away (a restored checkpoint): its next message lists them all."""
        self.ready = asyncio.Event()

    def push(self, events: list[FrameEvent]) -> None:
        if len(self.steps) >= QUEUE_STEPS:
            self.dropped += len(self.steps.popleft())
        self.steps.append(deque(events))
        self.ready.set()

    def pop(self) -> FrameEvent | None:
        """The oldest unsent frame, or None."""
        while self.steps and not self.steps[0]:
            self.steps.popleft()
        return self.steps[0].popleft() if self.steps else None


@dataclass(eq=False)
class WorldWatch:
    """The broadcaster of one loaded world (``entry``): its watchers and, once a watcher asked, its anchors."""

    entry: WorldEntry
    watchers: set[Watcher] = field(default_factory=set)
    anchors: dict[int, AnchorRecord] = field(default_factory=dict)
    """Anchors by id: those steps made since this broadcaster began, and every one once ``anchors_read``."""
    anchors_read: bool = False
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)


class Watches:
    """Every watched world's broadcaster, by (tenant, world id). ``publish`` and the watches run on the event loop;
    ``watched`` may be called from the thread pool (a racy read: a watch that begins during a step starts after it)."""

    def __init__(self, registry: WorldRegistry) -> None:
        self.registry = registry
        self._worlds: dict[WorldKey, WorldWatch] = {}

    def _of(self, entry: WorldEntry) -> WorldWatch | None:
        watch = self._worlds.get(entry.key)
        return watch if watch is not None and watch.entry is entry else None

    def watched(self, entry: WorldEntry) -> bool:
        """Whether anyone watches ``entry``'s world (a step then builds its events: ``step_events``)."""
        return self._of(entry) is not None

    def publish(self, entry: WorldEntry, events: list[FrameEvent]) -> None:
        """Hand a step's events to every watcher of its world (event loop only; never waits)."""
        watch = self._of(entry)
        if watch is None:
            return
        gone = set(watch.anchors) - events[-1].anchor_ids if events else set()
        for anchor_id in gone:
            del watch.anchors[anchor_id]
        for event in events:
            watch.anchors.update((a.anchor_id, a) for a in event.anchors)
        for watcher in watch.watchers:
            watcher.anchors_gone |= bool(gone)
            watcher.push(events)

    def _join(self, entry: WorldEntry) -> tuple[WorldWatch, Watcher]:
        watch = self._of(entry)
        if watch is None:
            watch = self._worlds[entry.key] = WorldWatch(entry)
        watcher = Watcher()
        watch.watchers.add(watcher)
        return watch, watcher

    def _leave(self, watch: WorldWatch, watcher: Watcher) -> None:
        watch.watchers.discard(watcher)
        if not watch.watchers and self._worlds.get(watch.entry.key) is watch:
            del self._worlds[watch.entry.key]

    async def _read_anchors(self, watch: WorldWatch) -> None:
        """Read every anchor of the world once, under its lock (steps published meanwhile keep their records)."""
        async with watch.reading:
            if watch.anchors_read:
                return
            records = await self.registry.run(watch.entry, anchor_records)
            for record in records:
                watch.anchors.setdefault(record.anchor_id, record)
            watch.anchors_read = True

    async def watch(self, request: pb.WatchWorldRequest) -> AsyncIterator[pb.WatchWorldResponse]:
        """The messages of one ``WatchWorld`` call (see the module docstring); errors are engine errors."""
        entry = self.registry.entry(request.world_id)
        width = int(request.thumbnail_max_width)
        if width > MAX_THUMBNAIL_WIDTH_PX:
            raise InvalidInputError(
                f"thumbnail_max_width {width} is over {MAX_THUMBNAIL_WIDTH_PX} pixels; thumbnails are for watching "
                "(Step and Render send full frames)"
            )
        watch, watcher = self._join(entry)
        try:
            if request.include_anchors:
                await self._read_anchors(watch)
            first = pb.WatchWorldResponse(version=int(entry.world.version))
            if request.include_anchors:
                first.anchors.extend(a.to_proto() for a in sorted(watch.anchors.values(), key=lambda a: a.anchor_id))
                first.anchors_complete = True
            yield first
            while True:
                while (event := watcher.pop()) is None:
                    watcher.ready.clear()
                    changed = entry.changed  # replaced on every change: take it before looking at `deleted`
                    if entry.deleted:
                        raise NotFoundError(f"world {entry.world_id!r} was deleted")
                    await _first_of(watcher.ready, changed)
                dropped, watcher.dropped = watcher.dropped, 0
                complete, watcher.anchors_gone = bool(dropped) or watcher.anchors_gone, False
                with_anchors = request.include_anchors and not complete
                message = (await self.registry.offload(lambda: event.to_proto(width, with_anchors=with_anchors)) if width
                           else event.to_proto(0, with_anchors=with_anchors))  # thumbnails on the pool, the rest here
                message.dropped = dropped
                if request.include_anchors and complete:
                    message.anchors.extend(a.to_proto() for a in sorted(watch.anchors.values(), key=lambda a: a.anchor_id))
                    message.anchors_complete = True
                yield message
        finally:
            self._leave(watch, watcher)


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
