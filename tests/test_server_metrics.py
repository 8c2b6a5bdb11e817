"""The metrics endpoint and the request log (``server/metrics.py``, ``docs/metrics.md``) on a real server on loopback:
scraped over HTTP and parsed with prometheus-client's own parser; the Grafana dashboard in docs/ queries only what
the endpoint exports. (``worldweave serve --metrics-port`` as users run it: tests/test_server_cli.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from worldweave.bridge.eval.wall import wall_seed, yaw_poses
from worldweave.bridge.generators.echo import EchoGenerator
from worldweave.bridge.world import STAGES
from worldweave.proto.errors import AuthenticationError, InvalidInputError, NotFoundError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.proto.worldweave.v1 import world_pb2_grpc as pb_grpc
from worldweave.server.app import BackgroundServer, ServerConfig, create_server
from worldweave.server.auth import Caller, TokenTable
from worldweave.server.metrics import REQUEST_LOGGER
from worldweave.sim_clients.client import WorldClient

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana_dashboard.json"
TOKEN = "alice-token"
READ_ONLY_TOKEN = "alice-reader"
TENANT = "alice"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: BackgroundServer) -> tuple[Samples, dict[str, set[str]]]:
    """GET the server's /metrics over HTTP: every sample by (name, labels), and each exported sample name's label
    names."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            labels.setdefault(sample.name, set()).update(sample.labels)
    return samples, labels


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when absent (a labelled counter has no sample before its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """A server with the metrics endpoint on a free loopback port, the request log, and one tenant's token."""
    config = ServerConfig(metrics_port=0, log_requests=True, warm_up=False,
                          auth_tokens=TokenTable({TOKEN: Caller(TENANT, "read-write"),
                                                   READ_ONLY_TOKEN: Caller(TENANT, "read-only")}))
    with BackgroundServer(config=config, generator=EchoGenerator()) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[WorldClient]:
    with WorldClient(server.address, token=TOKEN) as connected:
        yield connected


@pytest.fixture
def world_id(client: WorldClient) -> Iterator[str]:
    frames, intrinsics = wall_seed(32, 24)
    world = client.worlds.create(frames, intrinsics)
    yield world.world_id
    client.worlds.delete(world.world_id)


def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``condition()``: a call that aborts has its status sent before the server's interceptor records it,
    so the client may see the answer a moment before the count or the log line exists."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the request was never recorded"
        time.sleep(0.01)


def unauthenticated_get_world(server: BackgroundServer, world_id: str) -> grpc.StatusCode:
    """GetWorld without a token; the status it got."""
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.WorldServiceStub(channel).GetWorld(pb.GetWorldRequest(world_id=world_id), timeout=10)
    return raised.value.code()


def test_scrape_counts_steps_requests_and_memory(server, client, world_id):
    before, _ = scrape(server)
    poses = yaw_poses(5, max_yaw_deg=4.0)
    for pose in poses[:3]:
        client.step(world_id, pose, depth=None)
    client.step(world_id, np.stack(poses[3:5]), depth=None)  # one request, two frames
    assert len(list(client.step_stream(world_id, poses[:2], depth=None))) == 2  # two requests on one stream
    for _ in range(2):
        with pytest.raises(NotFoundError):
            client.worlds.get("no-such-world")
    with pytest.raises(NotFoundError):
        client.step("no-such-world", poses[0])
    with pytest.raises(InvalidInputError):
        client.render(world_id, poses[:1], intrinsics=pb.Intrinsics(fx=0, fy=0, cx=0, cy=0, width=0, height=0))
    with WorldClient(server.address, token=READ_ONLY_TOKEN) as reader, pytest.raises(AuthenticationError):
        reader.step(world_id, poses[0])  # the Step stream refused before its first request: one request
    assert unauthenticated_get_world(server, world_id) == grpc.StatusCode.UNAUTHENTICATED
    after: Samples = {}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    failures = {("Step", "NOT_FOUND"): 1, ("GetWorld", "NOT_FOUND"): 2, ("Render", "INVALID_ARGUMENT"): 1,
                ("Step", "PERMISSION_DENIED"): 1, ("GetWorld", "UNAUTHENTICATED"): 1}

    def scraped_all() -> bool:
        nonlocal after
        after = scrape(server)[0]
        return all(delta("worldweave_requests_total", rpc=rpc, status=status) >= count
                   for (rpc, status), count in failures.items())

    eventually(scraped_all)

    step_requests = 3 + 1 + 2
    for stage in (*STAGES, "total"):
        assert delta("worldweave_step_stage_seconds_count", stage=stage) == step_requests, stage
        assert delta("worldweave_step_stage_seconds_bucket", stage=stage, le="+Inf") == step_requests, stage
    assert delta("worldweave_step_stage_seconds_sum", stage="total") > 0
    assert delta("worldweave_requests_total", rpc="Step", status="OK") == step_requests
    for (rpc, status), count in failures.items():
        assert delta("worldweave_requests_total", rpc=rpc, status=status) == count, (rpc, status)
    assert delta("worldweave_requests_total", rpc="GetWorld", status="OK") == 0
    assert delta("worldweave_request_duration_seconds_count", rpc="Step") == step_requests + 2
    assert delta("worldweave_request_duration_seconds_count", rpc="GetWorld") == 3
    assert delta("worldweave_request_duration_seconds_sum", rpc="Step") > 0

    world = client.worlds.get(world_id)
    assert value(after, "worldweave_worlds") == 1
    assert value(after, "worldweave_voxels") == world.voxel_count > 0
    assert value(after, "worldweave_anchors") >= 1
    assert value(after, "worldweave_queued_calls") == 0
    assert value(after, "worldweave_queue_limit_calls", scope="per_world") == server.server.config.queues.per_world
    assert value(after, "worldweave_refused_calls_total") == 0
    assert value(after, "worldweave_engine_calls_at_once") == server.server.registry.admission.gate.limit >= 1
    assert value(after, "process_resident_memory_bytes") > 0


def test_one_log_line_per_request(server, client, world_id, caplog):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    client.step(world_id, yaw_poses(1)[0], depth=None)
    with pytest.raises(NotFoundError):
        client.worlds.get("no-such-world")
    with pytest.raises(InvalidInputError):
        client.worlds.get("two words\nrpc=Forged")
    unauthenticated_get_world(server, world_id)

    def logged() -> dict[str, logging.LogRecord]:
        return {r.status: r for r in caplog.records if r.name == REQUEST_LOGGER}

    eventually(lambda: len(logged()) == 4)  # a failed call is logged just after its status left
    lines = logged()
    assert {(r.rpc, r.world, r.status) for r in lines.values()} == {
        ("Step", world_id, "OK"), ("GetWorld", "no-such-world", "NOT_FOUND"),
        ("GetWorld", "two words\nrpc=Forged", "INVALID_ARGUMENT"), ("GetWorld", world_id, "UNAUTHENTICATED"),
    }
    step = lines["OK"]
    assert step.tenant == TENANT and step.ms > 0
    assert re.fullmatch(rf"rpc=Step world={world_id} tenant={TENANT} status=OK ms=\d+\.\d\d", step.getMessage())
    forged = lines["INVALID_ARGUMENT"].getMessage()
    assert "\n" not in forged and 'world="two words\\nrpc=Forged"' in forged
    refused = lines["UNAUTHENTICATED"]
    assert refused.tenant is None and "tenant=" not in refused.getMessage()  # refused before auth named the tenant
    assert sum(r.name == REQUEST_LOGGER for r in caplog.records) == 4  # one line per request

def test_dashboard_queries_only_exported_metrics(server, client, world_id):
    client.step(world_id, yaw_poses(1)[0], depth=None)  # every labelled family has a sample
    with pytest.raises(NotFoundError):
        client.worlds.get("no-such-world")
    _, exported = scrape(server)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert len(exprs) >= 8
    for expr in exprs:
        names = re.findall(r"\b((?:worldweave|process)_[a-z_]+)\b", expr)
        assert names, f"no metric in {expr!r}"
        for name in names:
            assert name in exported, f"{expr!r}: {name} is not exported"
        selected = set().union(*(exported[name] for name in names))
        used = {label for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for label in group.split(",")}
        used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)", expr))
        assert {label.strip() for label in used if label.strip()} <= selected, expr


def test_a_busy_metrics_port_is_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def build() -> None:
            create_server("127.0.0.1:0", ServerConfig(metrics_port=port, warm_up=False), generator=EchoGenerator())

        with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: .*--metrics-port"):
            asyncio.run(build())

