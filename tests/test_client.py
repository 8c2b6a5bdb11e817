"""The SDK's connection behaviour: version check at connect, and errors that say what to do."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest

from worldweave.proto.errors import NotFoundError, ServerUnavailableError
from worldweave.proto.worldweave.v1 import API_VERSION
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.sim_clients.client import (
    IncompatibleServerError,
    WorldClient,
    check_api_version,
)


def test_api_version_rules():
    major, minor, patch = (int(p) for p in API_VERSION.split("."))
    assert check_api_version(API_VERSION) is None
    assert check_api_version(f"{major}.{minor}.{patch + 3}") is None
    assert "minor version" in check_api_version(f"{major}.{minor + 1}.0")
    with pytest.raises(IncompatibleServerError, match=f"major versions differ. Install a worldweave whose API major version is {major + 1}"):
        check_api_version(f"{major + 1}.0.0")
    with pytest.raises(IncompatibleServerError, match="not semver"):
        check_api_version("latest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_an_error_that_says_what_to_do():
    port = free_port()
    with pytest.raises(ServerUnavailableError, match=rf"server not reachable at 127.0.0.1:{port} — is `worldweave serve` running\?"):
        WorldClient(f"127.0.0.1:{port}", connect_timeout_s=0.5)


class OtherVersion(pb_grpc.WorldServiceServicer):
    """A real server that only answers the handshake, with a chosen API version."""

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version

    def GetServerInfo(self, request, context):
        return pb.GetServerInfoResponse(api_version=self.api_version, limits=pb.Limits(max_message_bytes=1 << 20))


@pytest.fixture
def versioned_server():
    servers = []

    def start(api_version: str) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        pb_grpc.add_WorldServiceServicer_to_server(OtherVersion(api_version), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def test_major_mismatch_refuses_and_minor_mismatch_warns(versioned_server):
    major, minor, _ = (int(p) for p in API_VERSION.split("."))
    with pytest.raises(IncompatibleServerError, match=f"server speaks worldweave API {major + 1}.0.0"):
        WorldClient(versioned_server(f"{major + 1}.0.0"), connect_timeout_s=5)
    with pytest.warns(UserWarning, match="minor version"):
        client = WorldClient(versioned_server(f"{major}.{minor + 1}.0"), connect_timeout_s=5)
    with client:
        assert client.info.api_version == f"{major}.{minor + 1}.0"


def test_the_sdk_knows_only_the_proto_and_numpy():
    import subprocess
    import sys

    code = (
        "import sys, worldweave.sim_clients.client, worldweave.sim_clients.conversions; "
        "print(sorted({m.split('.')[0] if not m.startswith('worldweave') else '.'.join(m.split('.')[:2]) "
        "for m in sys.modules if m.startswith(('worldweave.bridge', 'worldweave.server', 'torch'))}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"the client imports {loaded}"


def test_the_package_roots_export_the_public_api_and_load_grpc_only_when_asked():
    import subprocess
    import sys

    code = (
        "import sys, worldweave.sim_clients.conventions; assert 'grpc' not in sys.modules, 'conventions loaded grpc'; "
        "import worldweave.sim_clients as sdk, worldweave.proto as wire; "
        "missing = [n for n in sdk.__all__ if getattr(sdk, n, None) is None] + [n for n in wire.__all__ if getattr(wire, n, None) is None]; "
        "from worldweave.sim_clients import WorldClient, AsyncWorldClient, PointCloudMirror, box_region; "
        "from worldweave.proto import Pose, Intrinsics, WorldweaveError; print(missing, 'grpc' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["[]", "True"]


def test_any_rpc_by_name_answers_its_raw_response_messages(client, world_id):
    listed = client.call("ListWorlds", pb.ListWorldsRequest())
    assert [w.world_id for w in listed[0].worlds if w.world_id == world_id] == [world_id]
    cropped = client.call("CropPointCloud", pb.CropPointCloudRequest(
        world_id=world_id, box=pb.Box(min_m=pb.Vec3(x=2, y=-3, z=0), max_m=pb.Vec3(x=4, y=3, z=3)), max_chunk_bytes=4096))
    assert len(cropped) > 1 and cropped[-1].last and not cropped[0].last  # a server stream, read to its end
    step = pb.StepRequest(world_id=world_id)
    with pytest.raises(ValueError, match="no RPC 'Rycast' in WorldService"):
        client.call("Rycast", pb.RaycastRequest())
    with pytest.raises(TypeError, match="Raycast takes a RaycastRequest, got a StepRequest"):
        client.call("Raycast", step)
    with pytest.raises(NotFoundError, match="no world 'nowhere'"):
        client.call("GetWorld", pb.GetWorldRequest(world_id="nowhere"))
