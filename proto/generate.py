"""Regenerate the Python code of ``worldweave/v1/world.proto``.

``python -m worldweave.proto.generate`` runs, from the repository root::

    python -m grpc_tools.protoc -Iworldweave/proto=proto --python_out=OUT --grpc_python_out=OUT --pyi_out=OUT \
        proto/worldweave/v1/world.proto

into a temporary ``OUT`` and copies ``OUT/worldweave/proto/worldweave/v1/*`` next to the ``.proto``. Mapping the
include root to ``worldweave/proto`` makes the stubs import ``worldweave.proto.worldweave.v1.world_pb2``, inside
our namespace. grpcio-tools is pinned exactly in pyproject.toml: generated code refuses older runtimes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
"""The ``proto/`` folder: buf's module root, holding ``worldweave/v1/world.proto``."""
PROTO_FILE = "worldweave/v1/world.proto"
GENERATED_FILES = ("world_pb2.py", "world_pb2_grpc.py", "world_pb2.pyi")


def generate(out_dir: Path) -> dict[str, Path]:
    """Compile the ``.proto`` into ``out_dir``; return generated file name -> path."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-Iworldweave/proto={PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
    folder = out_dir / "worldweave" / "proto" / "worldweave" / "v1"
    return {name: folder / name for name in GENERATED_FILES}


def main() -> int:
    """Regenerate and copy the generated files into ``proto/worldweave/v1/``."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in generate(Path(tmp)).items():
            shutil.copyfile(path, PROTO_ROOT / "worldweave" / "v1" / name)
            print(f"wrote {PROTO_ROOT / 'worldweave' / 'v1' / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
