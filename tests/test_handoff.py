"""Hand-off of worlds through shared storage (``server.cluster.handoff``), without Ray: two real servers of one
shared folder on loopback (``replica.HandoffServer``), a real client with the replicas' token.

A world moved by release (save and unload) on one server and acquire on the other, and a world recovered after its
server stopped without saving (a crash: its records are all it left), continue with the same memory hash, version
and exactly-once sessions as a world that never moved; a retried (session, sequence) is answered from the kept
answer and does not step the world again. The embedded ``reproject`` generator (re-run on recovery) at 64x48.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from worldweave.bridge.eval.scenes import make_scene
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.proto.errors import StorageError
from worldweave.proto.geometry import Intrinsics
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.app import ServerConfig
from worldweave.server.cluster.handoff import LOGS_FOLDER, WORLDS_FOLDER, Segment, Span, recovery_plan
from worldweave.server.cluster.replica import HandoffServer, replica_config
from worldweave.server.record_log import MemoryHasher
from worldweave.server.registry import AutosavePolicy
from worldweave.server.sessions import StepSessions
from worldweave.sim_clients import conversions
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.rollouts import Rollouts

TOKEN = "handoff-test-token"
WIDTH, HEIGHT = 64, 48
SESSION = "agent-0"


@pytest.fixture(scope="module")
def walk() -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Intrinsics, list[np.ndarray]]:
    """The demo room's seed view, its intrinsics at WIDTH x HEIGHT and 12 poses of its closed-loop walk."""
    scene = make_scene("room", seed=0)
    intrinsics = Intrinsics.from_fov(WIDTH, HEIGHT, fov_x_deg=75.0)
    trajectory = closed_loop(scene, 13)
    start = scene.render(trajectory.poses[0], intrinsics)
    return (start.rgb, start.depth, start.pose.matrix), intrinsics, [p.matrix for p in trajectory.poses[1:]]


def start(shared: Path) -> HandoffServer:
    return HandoffServer(shared, ServerConfig(warm_up=False, auth_token=TOKEN)).start()


@pytest.fixture
def servers(tmp_path) -> Iterator[tuple[HandoffServer, HandoffServer, Path]]:
    """Two servers of one shared folder."""
    first, second = start(tmp_path), start(tmp_path)
    try:
        yield first, second, tmp_path
    finally:
        first.stop()
        second.stop()


def step(client: WorldClient, world_id: str, pose: np.ndarray, sequence: int) -> list[pb.StepResponse]:
    """Step ``world_id`` once at ``pose`` as number ``sequence`` of session SESSION."""
    request = conversions.step_request(world_id, pose.reshape(1, 4, 4), conversions.frame_format(True, True))
    request.session_id, request.sequence = SESSION, sequence
    return client.call("Step", request)


def state(server: HandoffServer, world_id: str) -> tuple[int, int, str]:
    """(version, frame count, memory hash) of a world loaded on ``server``."""
    async def read() -> tuple[int, int, str]:
        entry = server.server.registry.entry(world_id)
        return await server.server.registry.run(
            entry, lambda world: (int(world.version), int(world.frame_count), MemoryHasher()(world)))

    return server.run(read)


def build(server: HandoffServer, walk, world_id: str, steps: int) -> list[list[pb.StepResponse]]:
    """Create ``world_id`` on ``server`` with a checkpoint after its first step, then take ``steps`` numbered steps."""
    seed, intrinsics, poses = walk
    answers = []
    with WorldClient(server.address, token=TOKEN) as client:
        client.worlds.create([seed], intrinsics, world_id=world_id)
        for sequence in range(steps):
            answers.append(step(client, world_id, poses[sequence], sequence))
            if sequence == 0:
                Rollouts(client).checkpoint(world_id)
    return answers


def test_release_then_acquire_elsewhere_continues_exactly(servers, walk) -> None:
    first, second, shared = servers
    answers = build(first, walk, "moved", 4)
    before = state(first, "moved")
    assert first.run(first.handoff.release, "moved") is True
    assert first.run(first.handoff.release, "moved") is False  # not held any more
    assert first.handoff.held() == []

    assert second.run(second.handoff.acquire, "moved") == "loaded"
    assert second.run(second.handoff.acquire, "moved") == "held"
    assert state(second, "moved") == before
    with WorldClient(second.address, token=TOKEN) as client:
        again = step(client, "moved", walk[2][3], 3)  # the last step, retried after the move
        assert [r.replayed for r in again] == [True]
        assert again[0].frame.rgb.data == answers[3][0].frame.rgb.data
        assert state(second, "moved") == before  # answered from the kept answer: not applied twice
        step(client, "moved", walk[2][4], 4)
        assert client.worlds.get("moved").version == before[0] + 1
        checkpoint = Rollouts(client).list_checkpoints("moved")
        assert len(checkpoint) == 1
    assert (shared / WORLDS_FOLDER / "moved" / "sessions.bin").exists()


def test_a_crash_is_recovered_from_the_save_and_the_log(servers, walk, tmp_path_factory) -> None:
    """Server 1 autosaves nothing: it is stopped (as if killed) after steps that only the log holds; server 2
    rebuilds the world from the log, equal to the same calls on an uncrashed server; a retry is answered, once."""
    first, second, shared = servers
    answers = build(first, walk, "crashed", 5)
    first.run(first.server.registry.save, first.server.registry.entry("crashed"))  # a save after step 4 ...
    with WorldClient(first.address, token=TOKEN) as client:  # ... then steps the save does not hold
        answers += [step(client, "crashed", walk[2][n], n) for n in (5, 6)]
    first.stop()  # no save at stop (no autosave): what the world did since lives only in its log

    uncrashed = start(tmp_path_factory.mktemp("uncrashed"))
    try:
        build(uncrashed, walk, "crashed", 7)
        expected = state(uncrashed, "crashed")
    finally:
        uncrashed.stop()

    assert second.run(second.handoff.acquire, "crashed") == "recovered"
    assert state(second, "crashed") == expected
    with WorldClient(second.address, token=TOKEN) as client:
        for sequence in (5, 6):  # the kept answers of the steps replayed from the log
            again = step(client, "crashed", walk[2][sequence], sequence)
            assert again[0].replayed and again[0].frame.rgb.data == answers[sequence][0].frame.rgb.data
        assert state(second, "crashed") == expected
        with pytest.raises(Exception, match="expects sequence 7"):
            step(client, "crashed", walk[2][8], 8)  # a gap is still refused after recovery

    # the recovering server crashes too, before any save: the chain of logs still gives the world back
    second.stop()
    third = start(shared)
    try:
        assert third.run(third.handoff.acquire, "crashed") == "recovered"
        assert state(third, "crashed") == expected
    finally:
        third.stop()


def crash(server: HandoffServer) -> None:
    """Stop ``server`` as a crash would: without saving what its autosave has not saved yet."""
    server.server.registry.autosave = AutosavePolicy()
    server.stop()


def test_autosaves_during_recovery_note_the_position_replayed(tmp_path, walk) -> None:
    """Server 1 autosaves every 5 changes (its crash leaves 3 steps in the log only), server 2 every 2: it saves while
    it replays them (each save notes the log position it covers); two crashes in a row still give the world back."""
    config = ServerConfig(warm_up=False, auth_token=TOKEN, autosave=AutosavePolicy(every_changes=2))
    first = HandoffServer(tmp_path, replace(config, autosave=AutosavePolicy(every_changes=5))).start()
    second = HandoffServer(tmp_path, config).start()
    try:
        build(first, walk, "busy", 7)
        expected = state(first, "busy")
        crash(first)
        assert second.run(second.handoff.acquire, "busy") == "recovered"
        assert state(second, "busy") == expected
        crash(second)
        third = HandoffServer(tmp_path, config).start()
        try:
            assert third.run(third.handoff.acquire, "busy") in ("loaded", "recovered")
            assert state(third, "busy") == expected
        finally:
            third.stop()
    finally:
        first.stop()
        second.stop()


def test_a_world_never_saved_is_recovered_from_its_creation(servers, walk) -> None:
    first, second, _ = servers
    build(first, walk, "fresh", 3)
    before = state(first, "fresh")
    first.stop()
    assert second.run(second.handoff.acquire, "fresh") == "recovered"
    assert state(second, "fresh") == before


def test_a_generator_that_cannot_be_rerun_is_recovered_by_playback(tmp_path, walk, noisy_generator) -> None:
    config = ServerConfig(warm_up=False, auth_token=TOKEN)
    first = HandoffServer(tmp_path, config, generator=noisy_generator()).start()
    second = HandoffServer(tmp_path, config, generator=noisy_generator()).start()
    try:
        answers = build(first, walk, "noisy", 3)
        before = state(first, "noisy")
        first.stop()
        assert second.run(second.handoff.acquire, "noisy") == "recovered"
        assert state(second, "noisy") == before
        with WorldClient(second.address, token=TOKEN) as client:
            again = step(client, "noisy", walk[2][2], 2)
        assert again[0].replayed and again[0].frame.rgb.data == answers[2][0].frame.rgb.data
    finally:
        first.stop()
        second.stop()


def test_no_save_and_no_log_is_unknown(servers) -> None:
    first, _, shared = servers
    assert first.run(first.handoff.acquire, "nobody") == "unknown"
    assert first.handoff.held() == []
    assert not (shared / WORLDS_FOLDER / "nobody").exists()


def test_a_deleted_world_is_unknown_not_rebuilt_from_its_logs(servers, walk) -> None:
    first, second, shared = servers
    build(first, walk, "gone", 1)
    with WorldClient(first.address, token=TOKEN) as client:
        client.worlds.delete("gone", delete_saved=True)
    assert second.run(second.handoff.acquire, "gone") == "unknown"
    assert len(list((shared / LOGS_FOLDER).glob("gone.*.wwlog.deleted"))) == 1  # kept for worldweave replay


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_save_the_log_continues_from_must_be_there(servers, walk, damage) -> None:
    """After a move the newest log continues from the save; without that save (or with it unreadable) acquire is
    DATA_LOSS naming the world, never an empty or older world."""
    first, second, shared = servers
    build(first, walk, "lost", 2)
    first.run(first.handoff.release, "lost")
    assert second.run(second.handoff.acquire, "lost") == "loaded"
    second.stop()  # crashed: the log it started continues from the save
    saved = shared / WORLDS_FOLDER / "lost"
    if damage == "missing":
        shutil.rmtree(saved)
    else:
        (saved / "manifest.json").write_text("{not json")
    third = start(shared)
    try:
        with pytest.raises(StorageError, match="world 'lost'") as raised:
            third.run(third.handoff.acquire, "lost")
        assert raised.value.code == "DATA_LOSS"
        assert ("missing from shared storage" if damage == "missing" else "unreadable") in str(raised.value)
        assert third.handoff.held() == []
    finally:
        third.stop()
    assert len(list((shared / LOGS_FOLDER).glob("lost.*.wwlog"))) == 2


def test_replica_config_takes_serve_flags_but_not_its_own_folders(tmp_path) -> None:
    config = replica_config(["--generator", "reproject", "--autosave-every", "5"], TOKEN)
    assert config.auth_token == TOKEN and config.autosave.every_changes == 5
    with pytest.raises(Exception, match="--no-such-flag"):
        replica_config(["--no-such-flag"], TOKEN)
    with pytest.raises(Exception, match="keeps its worlds there"):
        HandoffServer(tmp_path, replica_config(["--data-dir", str(tmp_path)], TOKEN))


def test_saved_sessions_keep_answers_and_expect_a_number_still_waiting_again() -> None:
    """A save holds the world's lock: a number begun but still waiting for the lock ran nothing, so the saved
    session expects it again; finished numbers keep their answers. Bytes that are not saved sessions are DATA_LOSS."""
    async def run() -> None:
        sessions = StepSessions()
        assert sessions.begin("s", 0).run
        sessions.finish("s", 0, [pb.StepResponse(request_index=7)], None)
        assert sessions.begin("s", 1).run  # waiting for the lock when the save reads the sessions
        loaded = StepSessions.from_bytes(sessions.to_bytes(), pb.StepResponse.FromString, "test")
        assert [r.request_index for r in loaded.begin("s", 0).stored] == [7]
        assert loaded.begin("s", 1).run
        assert loaded.kept_bytes == sessions.kept_bytes
        sessions.finish("s", 1, None, RuntimeError("not run"))

    asyncio.run(run())
    with pytest.raises(StorageError, match="does not hold saved step sessions"):
        StepSessions.from_bytes(b"garbage", pb.StepResponse.FromString, "sessions.bin")
    with pytest.raises(StorageError, match="malformed"):
        StepSessions.from_bytes(StepSessions().to_bytes() + b"x", pb.StepResponse.FromString, "sessions.bin")


def test_recovery_plan_walks_the_chain_from_the_save_to_the_newest_log() -> None:
    """Pure: A (the creation's log), B and C both continue from A's record 8 (B's acquire crashed before it wrote
    anything; C came later, generation 2): the save covering A up to 5 replays A 6..8, then C."""
    a = Segment(Path("w.a.wwlog"), {"world_id": "w"})
    b = Segment(Path("w.b.wwlog"), {"continues": {"log": a.name, "records": 8, "version": 9, "generation": 1}})
    c = Segment(Path("w.c.wwlog"), {"continues": {"log": a.name, "records": 8, "version": 9, "generation": 2}})
    save = {"version": 6, "log": {"log": a.name, "records": 5}}
    assert recovery_plan("w", [a, c, b], save) == [Span(a, 5, 8), Span(c, 0, None)]
    assert recovery_plan("w", [a, c, b], {"version": 9, "log": {"log": a.name, "records": 8}}) == [Span(c, 0, None)]
    assert recovery_plan("w", [a], None) == [Span(a, 0, None)]
    with pytest.raises(StorageError, match="w.a.wwlog, which is missing"):
        recovery_plan("w", [c], save)
    with pytest.raises(StorageError, match="its save is missing from shared storage"):
        recovery_plan("w", [a, c], None)
    with pytest.raises(StorageError, match="is version 7, but its log w.c.wwlog continues from version 9"):
        recovery_plan("w", [a, c], {"version": 7, "log": {"log": a.name, "records": 8}})
