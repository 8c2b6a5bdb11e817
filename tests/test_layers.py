"""The layering contract (pyproject's [tool.importlinter], docs/architecture.md): proto imports nothing of ours;
bridge no gRPC, server or SDK; server no SDK; the SDK no engine and no server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_layer_contract_is_kept():
    beside = Path(sys.executable).parent / "lint-imports"  # the venv's, also when its bin/ is not on PATH
    lint = str(beside) if beside.is_file() else shutil.which("lint-imports")
    assert lint, "lint-imports (import-linter, the test extra) is not installed: run ./scripts/setup.sh"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout
