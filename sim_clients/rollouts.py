"""Worlds for many rollouts, from the client side: fork, checkpoint, restore, and steps that happen exactly once.

    rollouts = Rollouts(client)                    # a WorldClient (blocking)
    child = rollouts.fork("room")                  # a new world, a copy of "room" now (WorldInfo)
    mark = rollouts.checkpoint(child.world_id)     # CheckpointInfo: .checkpoint_id, .version, .frame_count
    session = rollouts.session(child.world_id)     # numbers its steps 0, 1, 2, ...
    frames = session.step(c2w)                     # retried with the same number on UNAVAILABLE / DEADLINE_EXCEEDED
    rollouts.restore(child.world_id, mark.checkpoint_id)

Everything goes through the client's ``call`` (any RPC by name), so deadlines, tokens, TLS and the client's retry of
refused calls apply as to every call. ``StepSession`` adds the exactly-once rule (``StepRequest.session_id`` and
``sequence``): a step whose reply was lost (the server went away, the deadline passed) is sent again with the same
number, and the server answers the frames of the step it already took instead of taking it twice (``Frame`` records
as ``WorldClient.step`` returns them). Poses are 4x4 float64 camera-to-world matrices (OpenCV camera, world Z up,
metres); every call takes ``timeout_s`` (seconds; None: the client's default).
"""

from __future__ import annotations

import time
import uuid
from typing import Protocol

import numpy as np
from google.protobuf.message import Message

from worldweave.proto.errors import DeadlineExceededError, ServerUnavailableError
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.rig import Rig
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.sim_clients import conversions
from worldweave.sim_clients.conversions import DepthEncoding, Frame, ImageEncoding

RETRY_ERRORS = (ServerUnavailableError, DeadlineExceededError)
"""What ``StepSession.step`` retries with the same sequence number: the reply may have been lost after the step."""


class Caller(Protocol):
    """A blocking client with ``call(rpc, request, timeout_s=...)`` (``WorldClient``)."""

    def call(self, rpc: str, request: Message, *, timeout_s: float | None = None) -> list[Message]: ...


class StepSession:
    """Steps of one world numbered 0, 1, 2, ... in one client session (``session_id``, default a random one).

    ``attempts``: most sends of one step (the first included); ``backoff_s``: wait before the first resend, doubled
    each time (seconds). ``image`` / ``depth``: how frames are encoded, as in ``WorldClient.step``.
    """

    def __init__(self, client: Caller, world_id: str, *, session_id: str | None = None, attempts: int = 5,
                 backoff_s: float = 0.2, image: ImageEncoding = "raw", depth: DepthEncoding | None = "float16_m") -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._client = client
        self.world_id = world_id
        self.session_id = session_id or uuid.uuid4().hex
        self.next_sequence = 0
        """The number the next ``step`` sends."""
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._format = conversions.frame_format(image, depth)

    def step(self, poses: np.ndarray, *, intrinsics: Intrinsics | None = None, rig: Rig | None = None,
             prompt: str | None = None, timeout_s: float | None = None) -> list[Frame]:
        """Step the world at ``poses`` (a 4x4 or (N, 4, 4)) exactly once, with the session's next number; resend it
        with the same number after UNAVAILABLE or DEADLINE_EXCEEDED (up to ``attempts`` sends), raising the last
        such error. Other errors are raised at once; the number is then used again by the next step when the server
        did not take it (FAILED_PRECONDITION says which number it expects). ``rig``: body poses seen by a camera rig,
        one number for the whole request (as ``WorldClient.step``)."""
        request = conversions.step_request(self.world_id, np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4),
                                           self._format, intrinsics=intrinsics, rig=rig, prompt=prompt)
        request.session_id = self.session_id
        request.sequence = self.next_sequence
        wait_s = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                responses = self._client.call("Step", request, timeout_s=timeout_s)
                break
            except RETRY_ERRORS:
                if attempt == self.attempts:
                    raise
                time.sleep(wait_s)
                wait_s *= 2
        self.next_sequence += 1
        return [conversions.decode_step_response(response) for response in responses]


class Rollouts:
    """Fork, checkpoint, restore and list checkpoints of ``client``'s worlds, and open exactly-once step sessions."""

    def __init__(self, client: Caller) -> None:
        self._client = client

    def _one(self, rpc: str, request: Message, timeout_s: float | None) -> Message:
        return self._client.call(rpc, request, timeout_s=timeout_s)[0]

    def fork(self, world_id: str, *, checkpoint_id: str = "", new_world_id: str = "",
             timeout_s: float | None = None) -> pb.WorldInfo:
        """A new world (the caller's tenant) starting as ``world_id`` now, or as its checkpoint ``checkpoint_id``;
        ``new_world_id`` empty lets the server pick the id."""
        request = pb.ForkWorldRequest(world_id=world_id, checkpoint_id=checkpoint_id, new_world_id=new_world_id)
        return self._one("ForkWorld", request, timeout_s).world

    def checkpoint(self, world_id: str, *, timeout_s: float | None = None) -> pb.CheckpointInfo:
        """Keep the world's state now; returns the checkpoint (``.checkpoint_id``, ``.version``, ``.frame_count``)."""
        return self._one("Checkpoint", pb.CheckpointRequest(world_id=world_id), timeout_s).checkpoint

    def restore(self, world_id: str, checkpoint_id: str, *, timeout_s: float | None = None) -> pb.WorldInfo:
        """Set the world back to one of its checkpoints (its version still increases)."""
        request = pb.RestoreWorldRequest(world_id=world_id, checkpoint_id=checkpoint_id)
        return self._one("RestoreWorld", request, timeout_s).world

    def list_checkpoints(self, world_id: str, *, timeout_s: float | None = None) -> list[pb.CheckpointInfo]:
        """The world's checkpoints, oldest first."""
        return [*self._one("ListCheckpoints", pb.ListCheckpointsRequest(world_id=world_id), timeout_s).checkpoints]

    def session(self, world_id: str, **options) -> StepSession:
        """An exactly-once step session on ``world_id`` (options: those of ``StepSession``)."""
        return StepSession(self._client, world_id, **options)
