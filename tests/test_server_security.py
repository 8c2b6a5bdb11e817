"""Bearer-token auth and TLS on a real server: a wrong or missing token is refused UNAUTHENTICATED (unary and
streaming calls alike) while health probes stay open; the right token is served; a TLS server with a self-signed
certificate made here serves a TLS client (sync and asyncio) and refuses a plain one."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.proto.errors import (
    AuthenticationError,
    InvalidInputError,
    ServerUnavailableError,
)
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig
from worldweave.sim_clients.aio_client import AsyncWorldClient
from worldweave.sim_clients.client import WorldClient
from worldweave.sim_clients.mirror import PointCloudMirror

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def token_server():
    with BackgroundServer(config=ServerConfig(auth_token=TOKEN), generator=EchoGenerator()) as running:
        yield running


def test_missing_or_wrong_token_is_unauthenticated(token_server):
    with pytest.raises(AuthenticationError, match="this server needs a bearer token") as caught:
        WorldClient(token_server.address)
    assert caught.value.code == "UNAUTHENTICATED"
    with pytest.raises(AuthenticationError, match="the bearer token is wrong"):
        WorldClient(token_server.address, token="s3cret-tokeN")
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.WorldServiceStub(channel)
        for call in (lambda: list(stub.StreamPointCloud(pb.StreamPointCloudRequest(world_id="w"), timeout=5)),
                     lambda: list(stub.Step(iter([pb.StepRequest(world_id="w")]), timeout=5)),
                     lambda: stub.ListWorlds(pb.ListWorldsRequest(), timeout=5, metadata=(("authorization", "Bearer x"),))):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_right_token_is_served_on_every_kind_of_call(token_server):
    frames, intrinsics = wall_seed(32, 24)
    with WorldClient(token_server.address, token=TOKEN) as client:
        world_id = client.worlds.create(frames, intrinsics).world_id
        frame, = client.step(world_id, yaw_poses(2)[1])
        streamed = list(client.step_stream(world_id, yaw_poses(3)))
        mirror = PointCloudMirror()
        assert mirror.update(client.point_cloud.stream(world_id)) == frame.version + 3 == streamed[-1].version
        assert client.queries.nearest_surface(world_id, [2.5, 0.0, 1.5], 1.0).found.all()
        client.worlds.delete(world_id)


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A PEM certificate for localhost / 127.0.0.1 and its PEM private key, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = self_signed_certificate()
    (folder / "cert.pem").write_bytes(certificate)
    (folder / "key.pem").write_bytes(key)
    config = ServerConfig(tls_cert_file=folder / "cert.pem", tls_key_file=folder / "key.pem", auth_token=TOKEN)
    with BackgroundServer(config=config, generator=EchoGenerator()) as running:
        yield running, certificate


def test_tls_server_serves_a_tls_client(tls_server):
    server, certificate = tls_server
    frames, intrinsics = wall_seed(32, 24)
    with WorldClient(server.address, tls_root_certificates=certificate, token=TOKEN) as client:
        world_id = client.worlds.create(frames, intrinsics).world_id
        frame, = client.step(world_id, yaw_poses(2)[1])
        assert frame.rgb.shape == (24, 32, 3)
        assert len(client.point_cloud.crop(world_id, [2, -5, -5], [4, 5, 5]).points_m) > 100
        client.worlds.delete(world_id)


def test_tls_server_serves_an_asyncio_client(tls_server):
    server, certificate = tls_server

    async def session() -> int:
        async with await AsyncWorldClient.connect(server.address, tls_root_certificates=certificate, token=TOKEN) as client:
            frames, intrinsics = wall_seed(32, 24)
            world_id = (await client.worlds.create(frames, intrinsics)).world_id
            frames = await client.step(world_id, yaw_poses(2)[1])
            await client.worlds.delete(world_id)
            return frames[0].version

    assert asyncio.run(session()) == 2


def test_tls_server_refuses_a_plain_client(tls_server):
    server, _ = tls_server
    with pytest.raises(ServerUnavailableError, match="server not reachable"):
        WorldClient(server.address, token=TOKEN, connect_timeout_s=1.0)


def test_tls_client_refuses_an_untrusted_certificate(tls_server):
    server, _ = tls_server
    other, _ = self_signed_certificate()
    with pytest.raises(ServerUnavailableError):
        WorldClient(server.address, tls_root_certificates=other, token=TOKEN, connect_timeout_s=1.0)


def test_token_that_metadata_cannot_carry_is_refused_at_once():
    with pytest.raises(ValueError, match="printable ASCII without spaces"):
        WorldClient("127.0.0.1:1", token="two words")
    with pytest.raises(InvalidInputError, match="printable ASCII without spaces"):
        BackgroundServer(config=ServerConfig(auth_token=""), generator=EchoGenerator()).start()
