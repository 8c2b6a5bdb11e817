"""The cluster front door on a local Ray cluster: 2 CPU replicas of the default generator behind one gRPC port.

One scenario, in order (a Ray cluster costs tens of seconds to start, so the steps share it): 8 worlds created
through the front door, each held by exactly one replica; 8 concurrent clients stepping them with exactly-once
sequence numbers; one replica's actor killed mid-stepping (its calls answer UNAVAILABLE, the clients retry the same
sequence number, its worlds are recovered on the other replica, Serve restarts it and the front door adds it back);
every world then holds every acknowledged step exactly once. Then the cluster scales to 1 replica and back to 2
with a StreamPointCloud follow stream open on a world that had to move: the stream continues without an error.
And ``worldweave serve --ray`` where Ray cannot be imported says in one line how to install it (exit 2).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.registry import DEFAULT_GENERATOR
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.cluster.placement import WorkerCapacity
from worldweave.server.cluster.ray_cluster import BackgroundCluster, ClusterConfig, connect, disconnect
from worldweave.sim_clients.conversions import pose_messages, seed_message

WORLDS = 8
STEPS_AFTER_KILL = 3
"""Steps each client makes after the kill; before it, each steps until the kill (one pose per step: a world's
version moves by one per step, its sequence numbers are 0, 1, 2, ...)."""
POSES = yaw_poses(16)
RETRY_S = 0.2
WAIT_S = 90.0
"""Most seconds the test waits for any one thing (a restart, a version on the follow stream)."""


def test_ray_without_the_extra_says_how_to_install_it() -> None:
    hide_ray = ("import sys; sys.modules['ray'] = None; from worldweave.server.cli import main; "
                "sys.exit(main(['serve', '--ray', '--port', '0']))")
    done = subprocess.run([sys.executable, "-c", hide_ray], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install 'worldweave[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[BackgroundCluster]:
    pytest.importorskip("ray.serve", reason="the cluster needs the worldweave[ray] extra")
    config = ClusterConfig(shared_dir=tmp_path_factory.mktemp("shared"), replicas=2, capacity=WorkerCapacity(16),
                           cpus_per_replica=0.5, lease_idle_s=300.0, local_cpus=2,
                           server_args=("--generator", DEFAULT_GENERATOR, "--workers", "2"))
    started = time.monotonic()
    local = connect(config)
    try:
        with BackgroundCluster(config) as running:
            print(f"\nlocal Ray cluster and 2 replicas up in {time.monotonic() - started:.1f} s")
            yield running
    finally:
        disconnect(local)
        print(f"cluster test total (Ray start to shutdown): {time.monotonic() - started:.1f} s")


def step_once(stub: pb_grpc.WorldServiceStub, world_id: str, session: str, sequence: int) -> pb.StepResponse:
    """Step ``world_id`` as (``session``, ``sequence``), retrying the same number after UNAVAILABLE (a lost replica,
    a world on the move) or an admission refusal (RESOURCE_EXHAUSTED: 8 clients on one replica's 2 engine threads)
    until it is acknowledged; the answer."""
    request = pb.StepRequest(world_id=world_id, poses=pose_messages(POSES[sequence % len(POSES):][:1]),
                             session_id=session, sequence=sequence)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            (answer,) = stub.Step(iter([request]), timeout=30)
            return answer
        except grpc.RpcError as error:
            retry = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(RETRY_S)


def held_by_replica(cluster: BackgroundCluster) -> dict[str, list[str]]:
    """Each replica's own list of the worlds it holds (its ``held`` control call)."""
    door = cluster.front_door
    return {worker_id: cluster.run(door.replica(worker_id).handle.held.remote()) for worker_id in door.worker_ids}


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(RETRY_S)


def test_worlds_survive_a_lost_replica_and_scaling(cluster: BackgroundCluster) -> None:
    door = cluster.front_door
    channel = grpc.insecure_channel(cluster.address)
    stub = pb_grpc.WorldServiceStub(channel)
    assert "cluster" in stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).capabilities
    frames, intrinsics = wall_seed(64, 48)
    seed = seed_message(frames, intrinsics)
    worlds = [f"world-{k}" for k in range(WORLDS)]
    created = {w: stub.CreateWorld(pb.CreateWorldRequest(world_id=w, seed=seed), timeout=60).world for w in worlds}

    # Each world lives on exactly one replica, the one placement says; new worlds were spread over both.
    held = held_by_replica(cluster)
    assert sorted(w for ids in held.values() for w in ids) == worlds
    assert all(len(ids) == WORLDS // 2 for ids in held.values())
    assert all(door.placement.where(w) == worker for worker, ids in held.items() for w in ids)
    assert sorted(info.world_id for info in stub.ListWorlds(pb.ListWorldsRequest(), timeout=30).worlds) == worlds

    # 8 clients step concurrently; one replica dies under them (steps in flight on it answer UNAVAILABLE).
    answers: dict[str, list[pb.StepResponse]] = {w: [] for w in worlds}
    failures: list[BaseException] = []
    killed = threading.Event()

    def client(world_id: str) -> None:
        try:
            after = 0
            while after < STEPS_AFTER_KILL:
                answers[world_id].append(step_once(stub, world_id, f"client-{world_id}", len(answers[world_id])))
                after += killed.is_set()
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=client, args=(w,)) for w in worlds]
    for thread in threads:
        thread.start()
    wait_until(lambda: all(len(a) >= 2 for a in answers.values()) or failures, "every client's second step")
    victim = door.placement.where(worlds[0])
    victim_worlds = sorted(held[victim])
    actor = cluster.run(door.replica(victim).handle.actor_name.remote())
    import ray

    ray.kill(ray.get_actor(actor, namespace="serve"))
    killed.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert not failures, failures
    survivor = next(w for w in held if w != victim)
    assert all(door.placement.where(w) == survivor for w in victim_worlds)  # recovered there

    # Every acknowledged step is in its world once: the version and the frames moved by one per acknowledged step.
    steps = {w: len(answers[w]) for w in worlds}
    for world_id in worlds:
        info = stub.GetWorld(pb.GetWorldRequest(world_id=world_id), timeout=30).world
        assert info.version == created[world_id].version + steps[world_id], world_id
        assert info.frame_count == created[world_id].frame_count + steps[world_id], world_id
        frame_ids = [a.frame.frame_id for a in answers[world_id]]
        assert frame_ids == sorted(set(frame_ids)), world_id
    # A retry of a recovered world's last step is answered from its kept answer and does not move the world.
    moved = victim_worlds[0]
    again = step_once(stub, moved, f"client-{moved}", steps[moved] - 1)
    assert again.replayed and again.frame.frame_id == answers[moved][-1].frame.frame_id
    assert stub.GetWorld(pb.GetWorldRequest(world_id=moved), timeout=30).world.version == (
        created[moved].version + steps[moved])

    # Serve restarts the dead replica; the front door adds it back at its new address.
    wait_until(lambda: len(door.worker_ids) == 2, "the killed replica's restart")
    assert victim in door.worker_ids

    # A follow stream on a world of the replica that scaling down retires (the last added takes new worlds first).
    stub.CreateWorld(pb.CreateWorldRequest(world_id="followed", seed=seed), timeout=60)
    retired = door.worker_ids[-1]
    assert door.placement.where("followed") == retired
    versions: list[int] = []
    stream = stub.StreamPointCloud(pb.StreamPointCloudRequest(world_id="followed", follow=True), timeout=WAIT_S * 2)
    reader_errors: list[BaseException] = []

    def read() -> None:
        try:
            for chunk in stream:
                if chunk.last_in_version:
                    versions.append(chunk.version)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                reader_errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: versions, "the follow stream's snapshot")
    cluster.run(door.scale(1))
    assert door.worker_ids == [w for w in door.worker_ids if w != retired] and len(door.worker_ids) == 1
    moved_to = step_once(stub, "followed", "follower", 0).frame.version
    wait_until(lambda: versions[-1] >= moved_to, "the followed world's step on the follow stream")
    cluster.run(door.scale(2))
    assert len(door.worker_ids) == 2
    last = step_once(stub, "followed", "follower", 1).frame.version
    wait_until(lambda: versions[-1] >= last, "a step after scaling back up on the follow stream")
    stream.cancel()
    reader.join(WAIT_S)
    assert not reader_errors, reader_errors
    assert versions == sorted(versions)
    # Every world is still served, with its steps.
    for world_id in worlds:
        info = stub.GetWorld(pb.GetWorldRequest(world_id=world_id), timeout=30).world
        assert info.version == created[world_id].version + steps[world_id]
    channel.close()
