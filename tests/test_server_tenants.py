"""Tenants and roles on a real server on loopback: tokens of a token file map to tenants; each tenant lists and
reaches only its own worlds (another tenant's world is NOT_FOUND word for word as a world nobody has), the same id
lives in two tenants, saves go to one folder per tenant and are listed again after a restart; a read-only token
renders, queries and streams but every RPC that changes worlds is PERMISSION_DENIED; the token file's rules, and
``worldweave serve`` exiting 2 with one line for a malformed file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import AuthenticationError, InvalidInputError, NotFoundError
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.server.auth import DEFAULT_TENANT, Caller, read_token_file
from worldweave.server.cli import main as worldweave_main
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.world_state import box_region

TOKEN_FILE = """\
# the test server's tokens: TOKEN TENANT ROLE
alice-rw   alice    read-write
alice-ro   alice    read-only    # a viewer of alice's worlds

bob-rw     bob      read-write
admin-rw   default  read-write
"""
WALL = [2.0, -5.0, -5.0], [4.0, 5.0, 5.0]
"""A box around the wall seed's wall (x = 3 m), world metres."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tenant-data")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(TOKEN_FILE)
    return path


@pytest.fixture(scope="module")
def server(data_dir, token_file):
    config = ServerConfig(data_dir=data_dir, auth_tokens=read_token_file(token_file))
    with BackgroundServer(config=config, generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server):
    """One client per token of ``TOKEN_FILE``, by token."""
    opened = {token: WorldClient(server.address, token=token) for token in ("alice-rw", "alice-ro", "bob-rw", "admin-rw")}
    yield opened
    for client in opened.values():
        client.close()


def create(client: WorldClient, world_id: str) -> int:
    """Create a wall world ``world_id``; its version."""
    frames, intrinsics = wall_seed(32, 24)
    return client.worlds.create(frames, intrinsics, world_id=world_id).version


def ids(client: WorldClient) -> list[str]:
    return [world.world_id for world in client.worlds.list()]


def test_each_tenant_sees_and_reaches_only_its_own_worlds(clients):
    alice, bob, admin = clients["alice-rw"], clients["bob-rw"], clients["admin-rw"]
    create(alice, "shared")
    create(alice, "alice-only")
    create(bob, "shared")  # the same id in another tenant: no clash
    assert ids(alice) == ["alice-only", "shared"]
    assert ids(bob) == ["shared"]
    assert ids(admin) == []

    bob.step("shared", yaw_poses(2)[1])
    assert bob.worlds.get("shared").version == alice.worlds.get("shared").version + 1, "two worlds, one id"

    pose = yaw_poses(1)[0]
    reach = {
        "GetWorld": lambda world_id: bob.worlds.get(world_id),
        "Render": lambda world_id: bob.render(world_id, pose),
        "Step": lambda world_id: bob.step(world_id, pose),
        "Raycast": lambda world_id: bob.queries.raycast(world_id, [[0, 0, 1.5]], [[1, 0, 0]], 10.0),
        "StreamPointCloud": lambda world_id: list(bob.point_cloud.stream(world_id)),
        "CropPointCloud": lambda world_id: bob.point_cloud.crop(world_id, *WALL),
        "RemoveRegion": lambda world_id: bob.edits.remove_region(world_id, box_region(*WALL)),
        "SaveWorld": lambda world_id: bob.worlds.save(world_id),
        "DeleteWorld": lambda world_id: bob.worlds.delete(world_id),
    }
    for name, call in reach.items():
        with pytest.raises(NotFoundError) as other:
            call("alice-only")
        with pytest.raises(NotFoundError) as nobody:
            call("nobody-has")
        assert other.value.code == "NOT_FOUND", name
        assert str(other.value).replace("alice-only", "ID") == str(nobody.value).replace("nobody-has", "ID"), name
    assert alice.worlds.get("alice-only").version == 1, "bob's calls changed nothing of alice's"

    assert bob.worlds.delete("shared").unloaded
    assert ids(bob) == [] and ids(alice) == ["alice-only", "shared"]
    for world_id in ("alice-only", "shared"):
        alice.worlds.delete(world_id)


def test_saves_go_to_one_folder_per_tenant_and_are_listed_after_a_restart(clients, data_dir, token_file):
    alice, bob, admin = clients["alice-rw"], clients["bob-rw"], clients["admin-rw"]
    for client in (alice, bob, admin):
        create(client, "kept")
    bob.step("kept", yaw_poses(2)[1])
    for client in (alice, bob, admin):
        client.worlds.save("kept")
    assert (data_dir / "kept" / "manifest.json").is_file(), "the default tenant keeps the layout before tenants"
    assert (data_dir / "@tenants" / "alice" / "kept" / "manifest.json").is_file()
    assert (data_dir / "@tenants" / "bob" / "kept" / "manifest.json").is_file()

    create(alice, "alices-save")
    alice.worlds.save("alices-save")
    alice.worlds.delete("alices-save")  # unloaded, saved: only LoadWorld and DeleteWorld(delete_saved) reach it
    for call in (bob.worlds.load, lambda world_id: bob.worlds.delete(world_id, delete_saved=True)):
        with pytest.raises(NotFoundError) as other:
            call("alices-save")
        with pytest.raises(NotFoundError) as nobody:
            call("nobody-has")
        assert str(other.value).replace("alices-save", "ID") == str(nobody.value).replace("nobody-has", "ID")
    assert alice.worlds.delete("alices-save", delete_saved=True).deleted_saved

    config = ServerConfig(data_dir=data_dir, auth_tokens=read_token_file(token_file))
    with BackgroundServer(config=config, generator=EchoGenerator()) as restarted:
        for token, version in (("alice-rw", 1), ("bob-rw", 2), ("admin-rw", 1)):
            with WorldClient(restarted.address, token=token) as client:
                world, = client.worlds.list()
                assert (world.world_id, world.loaded, world.saved, world.version) == ("kept", False, True, version)
                assert client.worlds.load("kept").version == version
    for client in (alice, bob, admin):
        assert client.worlds.delete("kept", delete_saved=True).deleted_saved
    assert not (data_dir / "@tenants" / "bob" / "kept").exists() and not (data_dir / "kept").exists()


def test_read_only_role_reads_but_cannot_change_worlds(clients):
    alice, viewer, bob = clients["alice-rw"], clients["alice-ro"], clients["bob-rw"]
    version = create(alice, "viewed")
    create(bob, "bobs")
    pose = yaw_poses(1)[0]

    assert ids(viewer) == ["viewed"], "a read-only token sees its tenant's worlds"
    assert viewer.worlds.get("viewed").version == version
    frame, = viewer.render("viewed", pose, depth="float16_m")
    assert frame.rgb.shape == (24, 32, 3) and frame.coverage > 0.5
    assert viewer.queries.raycast("viewed", [[0, 0, 1.5]], [[1, 0, 0]], 10.0).version == version
    assert viewer.queries.nearest_surface("viewed", [[2.5, 0, 1.5]], 1.0).found.all()
    assert viewer.queries.check_spheres("viewed", [[3.0, 0, 1.5]], 0.2).version == version
    assert viewer.queries.occupancy("viewed", [[3.0, 0, 1.5], [1.0, 0, 1.5]]).version == version
    assert len(viewer.point_cloud.crop("viewed", *WALL).points_m) > 100
    assert sum(len(chunk.keys) for chunk in viewer.point_cloud.stream("viewed")) > 100

    changes = {
        "Step": lambda world_id: viewer.step(world_id, pose),
        "RemoveRegion": lambda world_id: viewer.edits.remove_region(world_id, box_region(*WALL)),
        "RecolorRegion": lambda world_id: viewer.edits.recolor_region(world_id, box_region(*WALL), (255, 0, 0)),
        "InsertPoints": lambda world_id: viewer.edits.insert_points(world_id, [[1.0, 0, 1.5]], np.zeros((1, 3), np.uint8)),
        "CreateWorld": lambda world_id: create(viewer, world_id + "-new"),
        "SaveWorld": lambda world_id: viewer.worlds.save(world_id),
        "LoadWorld": lambda world_id: viewer.worlds.load(world_id),
        "DeleteWorld": lambda world_id: viewer.worlds.delete(world_id),
    }
    for name, call in changes.items():
        for world_id in ("viewed", "bobs"):  # another tenant's world: denied the same, its existence not revealed
            with pytest.raises(AuthenticationError) as denied:
                call(world_id)
            assert denied.value.code == "PERMISSION_DENIED", name
            assert re.search(rf"role is read-only: {name} changes worlds and needs a read-write token",
                             str(denied.value)), str(denied.value)
    assert alice.worlds.get("viewed").version == version and ids(alice) == ["viewed"], "nothing changed"
    with pytest.raises(NotFoundError):
        viewer.render("bobs", pose)
    alice.worlds.delete("viewed")
    bob.worlds.delete("bobs")


@pytest.mark.parametrize("text, fault", [
    ("alice-rw alice read-write\nbob-rw bob\n", r":2: expected 'TOKEN TENANT ROLE', got 2 field\(s\)"),
    ("a alice read-write\n\n# comment\na bob read-only\n", r":4: duplicate token, already on line 1"),
    ("a alice read-write\nb bob admin\n", r":2: unknown role 'admin'; roles are read-write and read-only"),
    ("a ../etc read-write\n", r":1: tenant '../etc' must be 1\.\.64 characters"),
    ("t\u00f6ken alice read-write\n", r":1: the auth token: token must be non-empty printable ASCII"),
    ("lonely\nsecond alice read-write\n", r":1: expected 'TOKEN TENANT ROLE', got 1 field"),
    ("# nothing but comments\n\n", r"holds no token"),
])
def test_token_file_faults_name_the_file_and_line(tmp_path, text, fault):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=re.escape(str(path)) + ".*" + fault) as caught:
        read_token_file(path)
    assert "\n" not in str(caught.value)


def test_token_file_bare_token_and_comments(tmp_path):
    bare = tmp_path / "bare"
    bare.write_text("  s3cret-token  \n")  # the form before tenants: one read-write token of the default tenant
    table = read_token_file(bare)
    assert table.resolve("Bearer s3cret-token") == Caller(DEFAULT_TENANT, "read-write")
    assert table.resolve("Bearer s3cret-tokeN") is None
    lines = tmp_path / "lines"
    lines.write_text(TOKEN_FILE)
    table = read_token_file(lines)
    assert len(table) == 4 and table.tenants == ["alice", "bob", "default"]
    assert table.resolve(b"Bearer alice-ro") == Caller("alice", "read-only")


def test_serve_exits_2_with_one_line_for_a_malformed_token_file(tmp_path, caplog):
    path = tmp_path / "tokens"
    path.write_text("alice-rw alice read-write\n# viewers\nalice-ro alice viewer\n")
    with caplog.at_level(logging.INFO):
        code = worldweave_main(["serve", "--port", "0", "--no-malloc-tuning", "--auth-token-file", str(path)])
    assert code == 2
    line, = (record.getMessage() for record in caplog.records)  # the one line, no traceback, nothing started
    assert f"{path}:3: unknown role 'viewer'" in line and caplog.records[0].levelno == logging.ERROR
