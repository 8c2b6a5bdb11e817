"""The install exposes only the worldweave namespace, and the CLI answers --help."""

import importlib.util
import subprocess
import sys


def test_bare_top_level_names_are_not_importable():
    for name in ("bridge", "server", "proto", "sim_clients"):
        assert importlib.util.find_spec(name) is None, f"'import {name}' must fail: it would load modules twice"


def test_namespace_packages_import():
    import worldweave.bridge
    import worldweave.proto
    import worldweave.server
    import worldweave.sim_clients

    assert worldweave.bridge.__name__ == "worldweave.bridge"


def test_core_imports_without_open3d():
    code = (
        "import sys; sys.modules['open3d'] = None\n"
        "import worldweave.bridge.memory.voxel_map, worldweave.bridge.render, worldweave.bridge.generators.registry\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "worldweave.server.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "demo" in out.stdout
