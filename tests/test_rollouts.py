"""Worlds for many rollouts, on a real server on loopback: exactly-once steps (a retry after a lost reply, a copy in
flight, gaps), forks and checkpoints (isolation both ways, restore, persistence across a server restart)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.sessions import KEPT_RESULTS
from worldweave.sim_clients.conversions import pose_messages, seed_message

WIDTH, HEIGHT = 64, 48
POSES = yaw_poses(16)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("rollouts-data")


@pytest.fixture(scope="module")
def server(data_dir) -> Iterator[BackgroundServer]:
    with BackgroundServer(config=ServerConfig(data_dir=data_dir), generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server) -> Iterator[pb_grpc.WorldServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.WorldServiceStub(channel)


def create(stub, world_id: str) -> None:
    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    stub.CreateWorld(pb.CreateWorldRequest(world_id=world_id, seed=seed_message(frames, intrinsics)), timeout=30)


def step_request(world_id: str, pose_index: int, session: str = "", sequence: int | None = None) -> pb.StepRequest:
    request = pb.StepRequest(world_id=world_id, poses=pose_messages(POSES[pose_index : pose_index + 1]),
                             session_id=session)
    if sequence is not None:
        request.sequence = sequence
    return request


def step(stub, request: pb.StepRequest, timeout: float = 30) -> list[pb.StepResponse]:
    return list(stub.Step(iter([request]), timeout=timeout))


def info(stub, world_id: str) -> pb.WorldInfo:
    return stub.GetWorld(pb.GetWorldRequest(world_id=world_id), timeout=10).world


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


# ------------------------------------------------------------------------------------------------ exactly once


def test_a_step_retried_after_its_reply_was_lost_runs_once(stub):
    create(stub, "once")
    before = info(stub, "once").version
    request = step_request("once", 1, "s-lost", 0)
    # The request goes out on a stream that stays open; its reply is never read, and the call is cancelled once the
    # world has taken the step: the reply is lost.
    release = threading.Event()

    def requests():
        yield request
        release.wait(30)

    call = stub.Step(requests())
    deadline = time.monotonic() + 30
    while info(stub, "once").version == before and time.monotonic() < deadline:
        time.sleep(0.01)
    call.cancel()
    release.set()
    assert info(stub, "once").version == before + 1

    retried, again = step(stub, request), step(stub, request)
    assert info(stub, "once").version == before + 1  # neither retry moved the world
    assert len(retried) == len(again) == 1 and retried[0].replayed and again[0].replayed
    assert retried[0].frame.SerializeToString() == again[0].frame.SerializeToString()
    assert retried[0].frame.version == before + 1

    # A retry after a deadline that cut the call short: the step happened once, whether or not it had arrived.
    late = step_request("once", 2, "s-lost", 1)
    with pytest.raises(grpc.RpcError) as cut:
        step(stub, late, timeout=0.001)
    assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    answer = step(stub, late)
    time.sleep(0.2)
    assert info(stub, "once").version == before + 2
    assert answer[0].frame.SerializeToString() == step(stub, late)[0].frame.SerializeToString()

    # The next number runs; a gap names the expected number; an old number beyond those kept too.
    fresh = step(stub, step_request("once", 3, "s-lost", 2))
    assert not fresh[0].replayed and info(stub, "once").version == before + 3
    code, details = code_of(lambda: step(stub, step_request("once", 3, "s-lost", 5)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "expects sequence 3" in details
    for sequence in range(3, 3 + KEPT_RESULTS):
        step(stub, step_request("once", 4, "s-lost", sequence))
    code, details = code_of(lambda: step(stub, step_request("once", 1, "s-lost", 0)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"expects sequence {3 + KEPT_RESULTS}" in details
    stub.DeleteWorld(pb.DeleteWorldRequest(world_id="once"), timeout=10)


def test_copies_of_a_numbered_step_in_flight_get_the_first_ones_frames(stub):
    create(stub, "dupes")
    before = info(stub, "dupes").version
    request = step_request("dupes", 5, "s-dup", 0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: step(stub, request), range(4)))
    assert info(stub, "dupes").version == before + 1
    frames = {a[0].frame.SerializeToString() for a in answers}
    assert len(frames) == 1 and sum(not a[0].replayed for a in answers) == 1
    # Sessions are independent: another session starts at 0 on the same world.
    step(stub, step_request("dupes", 6, "s-other", 0))
    assert info(stub, "dupes").version == before + 2
    stub.DeleteWorld(pb.DeleteWorldRequest(world_id="dupes"), timeout=10)


@pytest.mark.parametrize("session, sequence, needle", [
    ("s", -1, "sequence must be >= 0"),
    ("s", None, "both session_id and sequence"),
    ("", 0, "both session_id and sequence"),
    ("bad id!", 0, "session_id"),
])
def test_bad_numbering_is_invalid_argument(stub, session, sequence, needle):
    code, details = code_of(lambda: step(stub, step_request("nobody", 0, session, sequence)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in details


# ------------------------------------------------------------------------------------------------ fork, checkpoints


def voxel_count(stub, world_id: str) -> int:
    return info(stub, world_id).voxel_count


def test_forks_are_isolated_both_ways_and_checkpoints_restore(stub):
    create(stub, "parent")
    step(stub, step_request("parent", 3))
    fork = stub.ForkWorld(pb.ForkWorldRequest(world_id="parent", new_world_id="child"), timeout=30).world
    parent = info(stub, "parent")
    assert (fork.world_id, fork.version, fork.voxel_count, fork.frame_count) == (
        "child", parent.version, parent.voxel_count, parent.frame_count)

    # The same step on both gives the same frame: the fork carries the whole state.
    a, b = step(stub, step_request("parent", 8)), step(stub, step_request("child", 8))
    assert a[0].frame.SerializeToString() == b[0].frame.SerializeToString()

    # Edits of either never show in the other.
    counts = voxel_count(stub, "parent"), voxel_count(stub, "child")
    box = pb.Region(box=pb.Box(min_m=pb.Vec3(x=2.0, y=-5.0, z=-5.0), max_m=pb.Vec3(x=5.0, y=5.0, z=5.0)))
    removed = stub.RemoveRegion(pb.RemoveRegionRequest(world_id="parent", region=box), timeout=30)
    assert removed.voxels_removed > 0
    assert voxel_count(stub, "child") == counts[1]
    points = np.array([[2.9, 0.0, 2.5], [2.9, 0.1, 2.5]], np.float32)
    stub.InsertPoints(pb.InsertPointsRequest(world_id="child", points_m=points.tobytes(),
                                             colors=np.full((2, 3), 200, np.uint8).tobytes()), timeout=30)
    assert voxel_count(stub, "parent") == counts[0] - removed.voxels_removed
    # Steps of the fork do not move the parent, and the reverse.
    parent_version = info(stub, "parent").version
    step(stub, step_request("child", 9))
    assert info(stub, "parent").version == parent_version

    # Checkpoint, move on, restore: the same step from the checkpoint gives the same frame again.
    checkpoint = stub.Checkpoint(pb.CheckpointRequest(world_id="child"), timeout=30).checkpoint
    first = step(stub, step_request("child", 10))
    step(stub, step_request("child", 11))
    restored = stub.RestoreWorld(pb.RestoreWorldRequest(world_id="child", checkpoint_id=checkpoint.checkpoint_id),
                                 timeout=30).world
    assert restored.version > first[0].frame.version and restored.frame_count == checkpoint.frame_count
    assert step(stub, step_request("child", 10))[0].frame.rgb.data == first[0].frame.rgb.data
    listed = stub.ListCheckpoints(pb.ListCheckpointsRequest(world_id="child"), timeout=10).checkpoints
    assert [c.checkpoint_id for c in listed] == [checkpoint.checkpoint_id]

    # A fork of a checkpoint starts there.
    grandchild = stub.ForkWorld(pb.ForkWorldRequest(world_id="child", checkpoint_id=checkpoint.checkpoint_id),
                                timeout=30).world
    assert (grandchild.version, grandchild.frame_count) == (checkpoint.version, checkpoint.frame_count)
    assert step(stub, step_request(grandchild.world_id, 10))[0].frame.rgb.data == first[0].frame.rgb.data
    # It has its parent's checkpoints: a branch can go back to a common ancestor; its own stay its own.
    stub.RestoreWorld(pb.RestoreWorldRequest(world_id=grandchild.world_id, checkpoint_id=checkpoint.checkpoint_id),
                      timeout=30)
    stub.Checkpoint(pb.CheckpointRequest(world_id=grandchild.world_id), timeout=30)
    assert len(stub.ListCheckpoints(pb.ListCheckpointsRequest(world_id="child"), timeout=10).checkpoints) == 1

    # Unknown worlds and checkpoints.
    for call in (
        lambda: stub.ForkWorld(pb.ForkWorldRequest(world_id="nobody"), timeout=10),
        lambda: stub.ForkWorld(pb.ForkWorldRequest(world_id="child", checkpoint_id="0123abcd"), timeout=10),
        lambda: stub.RestoreWorld(pb.RestoreWorldRequest(world_id="child", checkpoint_id="nope"), timeout=10),
        lambda: stub.RestoreWorld(pb.RestoreWorldRequest(world_id="nobody", checkpoint_id="nope"), timeout=10),
        lambda: stub.Checkpoint(pb.CheckpointRequest(world_id="nobody"), timeout=10),
    ):
        assert code_of(call)[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.ForkWorld(pb.ForkWorldRequest(world_id="child", new_world_id="parent"),
                                          timeout=10))[0] == grpc.StatusCode.ALREADY_EXISTS
    stub.DeleteWorld(pb.DeleteWorldRequest(world_id=grandchild.world_id), timeout=10)


def test_saves_are_isolated_and_checkpoints_survive_a_restart(stub, data_dir):
    # Uses "parent" and "child" from the test above when run after it; makes its own otherwise.
    names = {w.world_id for w in stub.ListWorlds(pb.ListWorldsRequest(), timeout=10).worlds}
    if "parent" not in names:
        create(stub, "parent")
        stub.ForkWorld(pb.ForkWorldRequest(world_id="parent", new_world_id="child"), timeout=30)
        step(stub, step_request("child", 9))
    at_checkpoint = info(stub, "child")
    checkpoint = stub.Checkpoint(pb.CheckpointRequest(world_id="child"), timeout=30).checkpoint
    step(stub, step_request("child", 12))
    expected = {name: (info(stub, name).version, info(stub, name).voxel_count) for name in ("parent", "child")}
    assert expected["parent"] != expected["child"]
    for name in ("child", "parent"):
        stub.SaveWorld(pb.SaveWorldRequest(world_id=name), timeout=60)

    with BackgroundServer(config=ServerConfig(data_dir=data_dir), generator=EchoGenerator()) as restarted, \
            grpc.insecure_channel(restarted.address) as channel:
        again = pb_grpc.WorldServiceStub(channel)
        for name in ("parent", "child"):
            loaded = again.LoadWorld(pb.LoadWorldRequest(world_id=name), timeout=60).world
            assert (loaded.version, loaded.voxel_count) == expected[name]
        listed = again.ListCheckpoints(pb.ListCheckpointsRequest(world_id="child"), timeout=10).checkpoints
        assert checkpoint.checkpoint_id in [c.checkpoint_id for c in listed]
        assert again.ListCheckpoints(pb.ListCheckpointsRequest(world_id="parent"), timeout=10).checkpoints == []
        restored = again.RestoreWorld(pb.RestoreWorldRequest(world_id="child", checkpoint_id=checkpoint.checkpoint_id),
                                      timeout=30).world
        assert (restored.frame_count, restored.voxel_count) == (at_checkpoint.frame_count, at_checkpoint.voxel_count)
        assert restored.version > expected["child"][0]


# ------------------------------------------------------------------------------------------------ SDK


def test_sdk_session_resends_a_lost_step_with_its_number_and_the_world_moves_once(server, stub):
    from worldweave.proto.errors import DeadlineExceededError
    from worldweave.sim_clients.client import WorldClient
    from worldweave.sim_clients.rollouts import Rollouts

    with WorldClient(server.address) as client:

        class LosesTheFirstStepReply:
            """The real client, except that the first Step's reply is lost after the server took the step."""

            lost = 0

            def call(self, rpc, request, *, timeout_s=None):
                answer = client.call(rpc, request, timeout_s=timeout_s)
                if rpc == "Step" and not self.lost:
                    self.lost += 1
                    raise DeadlineExceededError("the reply was lost")
                return answer

        lossy = LosesTheFirstStepReply()
        rollouts = Rollouts(lossy)
        create(stub, "sdk")
        forked = rollouts.fork("sdk", new_world_id="sdk-fork")
        session = rollouts.session(forked.world_id, backoff_s=0.0)
        frames = session.step(POSES[4])
        assert lossy.lost == 1 and session.next_sequence == 1
        assert info(stub, "sdk-fork").version == forked.version + 1 == frames[0].version
        mark = rollouts.checkpoint("sdk-fork")
        session.step(POSES[5])
        assert [c.checkpoint_id for c in rollouts.list_checkpoints("sdk-fork")] == [mark.checkpoint_id]
        assert rollouts.restore("sdk-fork", mark.checkpoint_id).frame_count == mark.frame_count
        assert info(stub, "sdk").version == forked.version  # the parent never moved


# ------------------------------------------------------------------------------------------------ gym


GYM_OPTIONS = {"width": WIDTH, "height": HEIGHT}
TURN = np.array([0.5, 0.0, 0.0, 1.0, 0.0], np.float32)
SIDESTEP = np.array([0.0, 1.0, 0.0, -1.0, 0.0], np.float32)


def test_gym_reset_restores_and_episodes_fork_and_rewind(server):
    from worldweave.sim_clients.gym_env.env import WorldEnv

    env = WorldEnv(address=server.address, **GYM_OPTIONS)
    try:
        start, _ = env.reset(seed=3)
        world_id = env.world_id
        first = [env.step(TURN)[0]["rgb"] for _ in range(2)]
        again, _ = env.reset()  # restored, not rebuilt: same world, same start, same frames for the same actions
        assert env.world_id == world_id
        np.testing.assert_array_equal(again["rgb"], start["rgb"])
        np.testing.assert_array_equal(env.step(TURN)[0]["rgb"], first[0])

        mark = env.checkpoint()
        ahead = env.step(TURN)[0]
        at_fork = env.checkpoint()
        child = env.fork()
        try:
            env.restore(mark)  # rewinds the parent only
            np.testing.assert_array_equal(env.step(TURN)[0]["rgb"], ahead["rgb"])
            # The fork continues from the fork point, untouched by what the parent did since.
            branch = child.step(SIDESTEP)[0]
            assert not np.array_equal(branch["rgb"], ahead["rgb"])
            env.restore(at_fork)
            np.testing.assert_array_equal(env.step(SIDESTEP)[0]["rgb"], branch["rgb"])
            restarted, _ = child.reset()  # the fork's reset comes back to the episode's start
            np.testing.assert_array_equal(restarted["rgb"], start["rgb"])
            assert child.world_id != env.world_id
        finally:
            child.close()
        assert env.world_id in {w.world_id for w in env.client.worlds.list()}
    finally:
        env.close()


def test_a_vector_env_of_four_forks_diverges_only_through_its_actions(server):
    from worldweave.sim_clients.gym_env.vector import WorldVectorEnv

    envs = WorldVectorEnv(4, seed=1, address=server.address, **GYM_OPTIONS)
    try:
        obs, _ = envs.reset(seed=9)
        assert obs["rgb"].shape == (4, HEIGHT, WIDTH, 3)
        for i in range(1, 4):  # one seed world: the same start everywhere
            np.testing.assert_array_equal(obs["rgb"][i], obs["rgb"][0])
        worlds = {env.unwrapped.world_id for env in envs.envs}
        assert len(worlds) == 4 and envs.seed_env.world_id not in worlds
        for _ in range(3):
            obs, rewards, terminated, truncated, infos = envs.step(np.stack([TURN, TURN, SIDESTEP, -TURN]))
            assert rewards.shape == (4,) and not truncated.any()
        np.testing.assert_array_equal(obs["rgb"][1], obs["rgb"][0])  # same actions, same frames
        np.testing.assert_array_equal(obs["pose"][1], obs["pose"][0])
        assert not np.array_equal(obs["pose"][2], obs["pose"][0]) and not np.array_equal(obs["rgb"][3], obs["rgb"][0])
    finally:
        envs.close()


def test_a_fork_belongs_to_the_tenant_that_made_it(tmp_path):
    from worldweave.server.auth import read_token_file

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("alice-rw alice read-write\nalice-ro alice read-only\nbob-rw bob read-write\n")
    config = ServerConfig(auth_tokens=read_token_file(tokens))
    with BackgroundServer(config=config, generator=EchoGenerator()) as running, \
            grpc.insecure_channel(running.address) as channel:
        tenant_stub = pb_grpc.WorldServiceStub(channel)

        def as_(token: str) -> tuple:
            return (("authorization", f"Bearer {token}"),)

        frames, intrinsics = wall_seed(WIDTH, HEIGHT)
        tenant_stub.CreateWorld(pb.CreateWorldRequest(world_id="w", seed=seed_message(frames, intrinsics)),
                                metadata=as_("alice-rw"), timeout=30)
        tenant_stub.ForkWorld(pb.ForkWorldRequest(world_id="w", new_world_id="f"), metadata=as_("alice-rw"), timeout=30)
        listed = tenant_stub.ListWorlds(pb.ListWorldsRequest(), metadata=as_("alice-rw"), timeout=10).worlds
        assert sorted(w.world_id for w in listed) == ["f", "w"]
        assert tenant_stub.ListWorlds(pb.ListWorldsRequest(), metadata=as_("bob-rw"), timeout=10).worlds == []
        code, _ = code_of(lambda: tenant_stub.ForkWorld(pb.ForkWorldRequest(world_id="w"), metadata=as_("bob-rw"),
                                                        timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND  # as for a world nobody has
        code, _ = code_of(lambda: tenant_stub.Checkpoint(pb.CheckpointRequest(world_id="f"), metadata=as_("alice-ro"),
                                                         timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert tenant_stub.ListCheckpoints(pb.ListCheckpointsRequest(world_id="f"), metadata=as_("alice-ro"),
                                           timeout=10).checkpoints == []


# ------------------------------------------------------------------------------------------------ engine


def test_engine_fork_shares_memory_until_written_and_edits_stay_on_their_side():
    from worldweave.bridge.frames import RGBDFrame
    from worldweave.bridge.regions import Box
    from worldweave.bridge.world import Seed, World
    from worldweave.proto.geometry import Pose

    frames, intrinsics = wall_seed(WIDTH, HEIGHT)
    parent = World(Seed([RGBDFrame(rgb, depth, Pose.from_matrix(c2w), intrinsics) for rgb, depth, c2w in frames]))
    parent.step([Pose.from_matrix(POSES[2])])
    views = [Pose.from_matrix(POSES[i]) for i in (1, 5)]
    before = [r.rgb.copy() for r in parent.render(views)]
    child = parent.fork()
    # Two private mappings of one snapshot file: the arrays do not alias; the anchors are the same objects.
    assert not np.shares_memory(child.memory.voxel_map._keys.numpy(), parent.memory.voxel_map._keys.numpy())
    assert all(a is b for a, b in zip(child.memory.anchors, parent.memory.anchors))

    parent.remove(Box(np.array([2.0, -0.5, 1.0]), np.array([4.0, 0.5, 2.0])))  # the voxel map and the anchors
    edited = [r.rgb.copy() for r in parent.render(views)]
    assert not all(np.array_equal(e, b) for e, b in zip(edited, before))
    for render, original in zip(child.render(views), before):
        np.testing.assert_array_equal(render.rgb, original)
    child.insert(np.array([[2.9, 0.0, 1.5]], np.float32), np.array([[255, 0, 0]], np.uint8))
    for render, seen in zip(parent.render(views), edited):
        np.testing.assert_array_equal(render.rgb, seen)



def plane_map(nx: int, ny: int):
    """A voxel map of ``nx * ny`` voxels (2 cm) on the plane z = 0.01 m with random colours; rows in x-major order."""
    from worldweave.bridge.memory.voxel_map import VoxelMap

    grid = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), -1).reshape(-1, 2)
    points = np.column_stack([grid * 0.02 + 0.01, np.full(len(grid), 0.01)]).astype(np.float32)
    vmap = VoxelMap(0.02)
    vmap.insert(points, np.random.default_rng(0).integers(0, 256, points.shape, dtype=np.uint8))
    return vmap


def x_slab(x0_m: float, x1_m: float):
    """The region x0 <= x < x1 (metres): whole x-slices of ``plane_map``, so contiguous rows."""
    from worldweave.bridge.regions import Box

    return Box(np.array([x0_m, -1.0, -1.0]), np.array([x1_m, 100.0, 1.0]))


def frozen_arrays(frozen) -> dict:
    """The frozen arrays of a frozen voxel map by attribute path."""
    from worldweave.bridge import checkpoints

    out = {}
    for name, value in frozen.attributes.items():
        if isinstance(value, checkpoints._FrozenArray):
            out[name] = value
        elif isinstance(value, checkpoints._FrozenObject):
            out.update({f"{name}.{k}": v for k, v in frozen_arrays(value).items()})
    return out


def same_voxels(a, b) -> None:
    a, b = a.sorted_by_key(), b.sorted_by_key()
    for field in a.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_a_freeze_after_a_change_copies_only_the_pages_written_since():
    from worldweave.bridge import checkpoints

    vmap = plane_map(200, 100)  # 20,000 voxels
    first = checkpoints.freeze_voxel_map(vmap)
    at_first = vmap.voxels()
    vmap.voxels(), vmap.recolor(x_slab(50.0, 51.0), (1, 2, 3))  # read everything, change nothing (version + 1)
    unchanged = checkpoints.freeze_voxel_map(vmap)
    assert unchanged is not first and all(
        a is b for a, b in zip(frozen_arrays(unchanged).values(), frozen_arrays(first).values())
    )  # reading is not writing: every array is the previous freeze's
    assert vmap.recolor(x_slab(1.0, 1.2), (255, 0, 0)) == 1000  # rows 5,000..5,999: 12 KB of colours
    second = checkpoints.freeze_voxel_map(vmap)
    before, after = frozen_arrays(first), frozen_arrays(second)
    assert {name for name in after if after[name] is not before[name]} == {"_colors"}
    old_files = {id(p.file) for p in before["_colors"].pieces}
    new = [p for p in after["_colors"].pieces if id(p.file) not in old_files]
    assert len(new) == 1 and new[0].file.size <= 8 * 4096  # the pages written, not the 240 KB column
    same_voxels(checkpoints.thaw_voxel_map(first).voxels(), at_first)
    thawed = checkpoints.thaw_voxel_map(second)
    same_voxels(thawed.voxels(), vmap.voxels())
    # Both ways isolated: an edit of the thawed map shows neither in the live one nor in a new thaw, and the reverse.
    at_second = vmap.voxels()
    thawed.recolor(x_slab(0.0, 4.0), (0, 255, 0))
    same_voxels(vmap.voxels(), at_second)
    vmap.remove(x_slab(2.0, 3.0))
    same_voxels(checkpoints.thaw_voxel_map(second).voxels(), at_second)
    assert (thawed.voxels().colors == [0, 255, 0]).all()


def test_scattered_changes_stay_within_their_caps_and_a_regrown_array_is_written_whole(monkeypatch):
    from worldweave.bridge import checkpoints

    monkeypatch.setattr(checkpoints, "MAX_PIECES", 4)
    monkeypatch.setattr(checkpoints, "_MERGE_GAP_PAGES", 0)
    vmap = plane_map(200, 100)
    kept = [(checkpoints.freeze_voxel_map(vmap), vmap.voxels())]
    scattered = []
    for i in range(8):  # one x-slice (100 rows, 1.2 KB of colours) every 48 slices: separate runs of pages
        vmap.recolor(x_slab(0.02 * (48 * (i % 4) + i), 0.02 * (48 * (i % 4) + i) + 0.015), (i, 0, 0))
        colors = frozen_arrays(checkpoints.freeze_voxel_map(vmap))["_colors"]
        assert len(colors.pieces) <= 4  # past the cap the runs are copied into views (``scattered``) instead
        scattered.append(len(colors.scattered))
        kept.append((checkpoints.freeze_voxel_map(vmap), vmap.voxels()))
    assert scattered[0] == 0 and scattered[-1] > 0
    thawed = checkpoints.thaw_voxel_map(kept[-1][0])  # a view with scattered pages copied in, isolated both ways
    thawed.recolor(x_slab(0.0, 4.0), (9, 9, 9))
    same_voxels(vmap.voxels(), kept[-1][1])
    vmap.recolor(x_slab(0.5, 0.6), (7, 7, 7))
    assert (thawed.voxels().colors == 9).all()
    column = np.arange(20_000)[:, None] * np.array([0.0, 0.0, 0.02]) + [9.0, 9.0, 0.01]
    vmap.insert(column.astype(np.float32), np.zeros((20_000, 3), np.uint8))  # the columns grow: written whole
    regrown = frozen_arrays(checkpoints.freeze_voxel_map(vmap))["_colors"]
    assert len(regrown.pieces) == 1 and regrown.pieces[0].start == 0
    kept.append((checkpoints.freeze_voxel_map(vmap), vmap.voxels()))
    for frozen, voxels in kept:  # every snapshot still holds what it froze
        same_voxels(checkpoints.thaw_voxel_map(frozen).voxels(), voxels)

def test_kept_answers_stay_within_their_byte_budget(monkeypatch):
    import asyncio

    from worldweave.proto.errors import PreconditionError
    from worldweave.server import sessions

    monkeypatch.setattr(sessions, "MAX_KEPT_BYTES", 3000)

    async def run() -> None:
        kept = sessions.StepSessions()
        answer = [pb.StepResponse(frame=pb.Frame(rgb=pb.Image(data=bytes(1000))))]
        for session in ("a", "b"):
            for sequence in range(2):
                assert kept.begin(session, sequence).run
                kept.finish(session, sequence, answer, None)
        assert kept.kept_bytes <= 3000
        assert kept.begin("b", 1).stored is answer  # the newest answers stay
        with pytest.raises(PreconditionError, match="expects sequence 2; 0 is older than the answers kept"):
            kept.begin("a", 0)  # the oldest was dropped for the budget

    asyncio.run(run())
