"""``WatchWorld`` on a real server on loopback, with tenants: a read-only watcher sees another client's steps (pose,
camera, stage timings, thumbnails of the frame and its memory render, the world's anchors), a watcher that does
not read loses the oldest messages and is told how many, a tenant never sees another's steps, a deleted world ends
the watch with NOT_FOUND, and an oversized thumbnail width is INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.world import STAGES
from worldweave.proto.auth import call_metadata
from worldweave.proto.codecs import decode_image, decode_intrinsics, pose_matrix
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.auth import Caller, TokenTable
from worldweave.server.watch import QUEUE_STEPS
from worldweave.sim_clients.client import WorldClient

TOKENS = {"alice-rw": Caller("alice", "read-write"), "alice-ro": Caller("alice", "read-only"),
          "bob-rw": Caller("bob", "read-write")}
WIDTH, HEIGHT = 64, 48
"""The seed's image size, pixels."""
DEADLINE_S = 20.0
"""Deadline of each watch: a message that never comes fails the test instead of hanging it."""
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
"""Channel options that keep the watcher's receive window small, so a watcher that does not read backs up at once."""


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(config=ServerConfig(auth_tokens=TokenTable(TOKENS)), generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server) -> Iterator[dict[str, WorldClient]]:
    opened = {token: WorldClient(server.address, token=token) for token in TOKENS}
    yield opened
    for client in opened.values():
        client.close()


def create(client: WorldClient, world_id: str) -> None:
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    client.worlds.create(frames, intrinsics, world_id=world_id)


def watch(server: BackgroundServer, token: str, world_id: str, *, options=(), **fields) -> tuple[grpc.Channel, Iterator]:
    """A channel and a ``WatchWorld`` call on it, as ``token``."""
    channel = grpc.insecure_channel(server.address, options=list(options))
    call = pb_grpc.WorldServiceStub(channel).WatchWorld(
        pb.WatchWorldRequest(world_id=world_id, **fields), timeout=DEADLINE_S, metadata=call_metadata(token))
    return channel, call


def test_a_read_only_watcher_sees_another_clients_steps(server, clients):
    writer = clients["alice-rw"]
    create(writer, "watched")
    channel, call = watch(server, "alice-ro", "watched", thumbnail_max_width=32, include_anchors=True)
    with channel:
        first = next(call)
        assert first.HasField("frame") is False and first.anchors_complete and first.dropped == 0
        assert first.version == writer.worlds.get("watched").version
        seed_anchors = {a.anchor_id: a for a in first.anchors}
        assert [a.frame_id for a in seed_anchors.values()] == [0]  # the seed frame is the first anchor

        poses = yaw_poses(3, max_yaw_deg=40.0)
        frames = writer.step("watched", poses)
        seen = [next(call) for _ in frames]
        call.cancel()
    for message, frame, c2w in zip(seen, frames, poses):
        assert message.dropped == 0 and not message.anchors_complete
        assert (message.frame.frame_id, message.version) == (frame.frame_id, frame.version)
        np.testing.assert_allclose(pose_matrix(message.frame.pose), c2w, atol=1e-6)
        camera = decode_intrinsics(message.frame.intrinsics)
        assert (camera.width, camera.height) == (WIDTH, HEIGHT)
        assert set(message.timings_s) == {*STAGES, "total"} and message.timings_s["total"] > 0
        thumb, memory = decode_image(message.frame.thumbnail), decode_image(message.frame.memory_thumbnail)
        assert thumb.shape == memory.shape == (24, 32, 3)  # 64 x 48 scaled to 32 wide
        assert message.frame.thumbnail.encoding == pb.IMAGE_ENCODING_JPEG
        assert 0.0 <= message.frame.coverage <= 1.0
    # Turning 40 degrees away from the wall leaves most of the view uncovered: those frames make new anchors, each
    # listed once, on the message of the frame it was made from.
    new = [(a.anchor_id, a.frame_id, m.frame.frame_id) for m in seen for a in m.anchors]
    assert new, "no step frame became an anchor"
    assert all(frame_id == made_from for _, frame_id, made_from in new)
    assert len({anchor_id for anchor_id, _, _ in new} | set(seed_anchors)) == len(new) + len(seed_anchors)
    writer.worlds.delete("watched")


def test_anchors_that_a_restored_checkpoint_drops_leave_the_watchers_list(server, clients):
    writer = clients["alice-rw"]
    create(writer, "rewound")
    stub = pb_grpc.WorldServiceStub(writer_channel := grpc.insecure_channel(server.address))
    metadata = call_metadata("alice-rw")
    checkpoint = stub.Checkpoint(pb.CheckpointRequest(world_id="rewound"), metadata=metadata).checkpoint
    channel, call = watch(server, "alice-ro", "rewound", include_anchors=True)
    with channel, writer_channel:
        held = {a.anchor_id for a in next(call).anchors}
        writer.step("rewound", yaw_poses(4, max_yaw_deg=40.0)[1])  # turned away: a new anchor
        made = {a.anchor_id for a in next(call).anchors}
        assert made and not made & held
        stub.RestoreWorld(pb.RestoreWorldRequest(world_id="rewound", checkpoint_id=checkpoint.checkpoint_id),
                          metadata=metadata)
        writer.step("rewound", yaw_poses(4, max_yaw_deg=40.0)[0])  # facing the wall: no new anchor
        after = next(call)
        call.cancel()
    assert after.anchors_complete and {a.anchor_id for a in after.anchors} == held
    writer.worlds.delete("rewound")


def test_a_watcher_that_does_not_read_loses_the_oldest_messages_and_is_told(server, clients):
    writer = clients["alice-rw"]
    create(writer, "flood")
    total = 3 * QUEUE_STEPS
    big = decode_intrinsics(pb.Intrinsics(fx=150, fy=150, cx=159.5, cy=119.5, width=320, height=240))
    channel, call = watch(server, "alice-rw", "flood", options=SMALL_WINDOW, thumbnail_max_width=320)
    with channel:
        next(call)
        for c2w in yaw_poses(total):  # one frame a step, not reading meanwhile
            last = writer.step("flood", c2w, intrinsics=big, depth=None)[-1]
        received, dropped, last_id = [], 0, -1
        while not received or received[-1] != last.frame_id:
            message = next(call)
            assert message.frame.frame_id > last_id  # in order; the lost ones are the oldest
            last_id = message.frame.frame_id
            received.append(last_id)
            dropped += message.dropped
        call.cancel()
    assert dropped > 0
    assert len(received) + dropped == total
    writer.worlds.delete("flood")


def test_a_tenant_never_sees_another_tenants_steps(server, clients):
    alice, bob = clients["alice-rw"], clients["bob-rw"]
    create(alice, "twin")
    create(bob, "twin")  # the same id in bob's tenant
    channel, call = watch(server, "bob-rw", "twin")
    with channel:
        next(call)
        alice.step("twin", yaw_poses(2))
        mine = bob.step("twin", yaw_poses(3)[1])
        message = next(call)  # alice's steps came first: isolation broken would show one of hers here
        call.cancel()
    assert message.frame.frame_id == mine[0].frame_id and message.version == mine[0].version
    np.testing.assert_allclose(pose_matrix(message.frame.pose), yaw_poses(3)[1], atol=1e-6)
    alice.worlds.delete("twin")
    bob.worlds.delete("twin")
    create(alice, "alice-only")
    channel, call = watch(server, "bob-rw", "alice-only")
    with channel, pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    alice.worlds.delete("alice-only")


def test_deleting_the_world_ends_the_watch_with_not_found(server, clients):
    writer = clients["alice-rw"]
    create(writer, "doomed")
    channel, call = watch(server, "alice-ro", "doomed")
    with channel:
        next(call)
        writer.worlds.delete("doomed")
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "doomed" in caught.value.details() and "deleted" in caught.value.details()


def test_an_oversized_thumbnail_width_is_invalid_argument(server, clients):
    create(clients["alice-rw"], "thumbs")
    channel, call = watch(server, "alice-ro", "thumbs", thumbnail_max_width=4096)
    with channel, pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "thumbnail_max_width 4096" in caught.value.details()
    clients["alice-rw"].worlds.delete("thumbs")
