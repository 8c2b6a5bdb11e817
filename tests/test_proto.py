"""The checked-in generated code matches ``world.proto``, and the API version is stated once per side."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

from worldweave.proto import generate
from worldweave.proto.worldweave import v1
from worldweave.proto.worldweave.v1 import world_pb2, world_pb2_grpc


def test_generated_code_is_current(tmp_path):
    fresh = generate.generate(tmp_path)
    for name, path in fresh.items():
        checked_in = generate.PROTO_ROOT / "worldweave" / "v1" / name
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{checked_in} is stale: run `python -m worldweave.proto.generate` and commit the result"
        )


def test_proto_header_states_the_api_version():
    text = (generate.PROTO_ROOT / generate.PROTO_FILE).read_text()
    stated = re.search(r"API version \(semver\) of this file: (\d+\.\d+\.\d+)", text)
    assert stated is not None and stated.group(1) == v1.API_VERSION


def test_stubs_import_inside_the_namespace():
    assert world_pb2.DESCRIPTOR.package == "worldweave.v1"
    assert world_pb2_grpc.WorldServiceStub is not None
    service = world_pb2.DESCRIPTOR.services_by_name["WorldService"]
    assert {m.name for m in service.methods} >= {
        "GetServerInfo", "CreateWorld", "GetWorld", "ListWorlds", "DeleteWorld", "SaveWorld", "LoadWorld",
        "Render", "Step", "StreamPointCloud", "Raycast", "NearestSurface", "CheckCollision", "QueryOccupancy",
        "CropPointCloud", "RemoveRegion", "RecolorRegion", "InsertPoints",
    }
    step = service.methods_by_name["Step"]
    assert step.client_streaming and step.server_streaming


def test_buf_lint_passes():
    # The buf-bin wheel (the `test` extra) puts buf beside this interpreter's scripts, which need not be on PATH.
    beside = Path(sysconfig.get_path("scripts")) / "buf"
    buf = str(beside) if beside.exists() else shutil.which("buf")
    assert buf, "buf is missing: ./scripts/setup.sh installs it (the buf-bin wheel of worldweave's `test` extra)"
    result = subprocess.run([buf, "lint"], cwd=generate.PROTO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
