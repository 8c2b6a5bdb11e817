"""The install exposes only the worldweave namespace, and the CLI answers --help and --version as a terminal shows them."""

import importlib.util
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from worldweave.bridge.eval.cli import EVAL_KINDS
from worldweave.bridge.training.cli import TRAIN_KINDS
from worldweave.server.cli import SUBCOMMANDS, main


def test_bare_top_level_names_are_not_importable():
    """Our folders are importable only under ``worldweave.``; a bare ``import proto`` may still find another
    distribution's package of that name (proto-plus, which Ray's extra brings), never ours."""
    project = Path(__file__).resolve().parents[1]
    for name in ("bridge", "server", "proto", "sim_clients"):
        spec = importlib.util.find_spec(name)
        origins = [] if spec is None else [*(spec.submodule_search_locations or []), spec.origin or ""]
        assert not any(Path(origin).resolve().is_relative_to(project / name) for origin in origins if origin), (
            f"'import {name}' finds this project's folder: it would load modules twice")


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
    assert all(name in out.stdout for name in SUBCOMMANDS)


def test_cli_states_its_version():
    out = subprocess.run([sys.executable, "-m", "worldweave.server.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"worldweave {version('worldweave')}"


def _option_entries(help_text: str) -> dict[str, str]:
    """The options section of argparse help: invocation ("--port PORT") -> its help text, lines joined."""
    entries: dict[str, str] = {}
    section = help_text.split("\noptions:\n", 1)[1]
    invocation = None
    for line in section.splitlines():
        if re.match(r"^  -", line):
            invocation, _, text = line.strip().partition("  ")
            entries[invocation] = text.strip()
        elif line.startswith("   ") and invocation is not None:
            entries[invocation] += " " + line.strip()
        else:
            invocation = None  # a blank line or the epilog ends the section
    return entries


KINDS = [*(f"eval {kind}" for kind in EVAL_KINDS), *(f"train {kind}" for kind in TRAIN_KINDS)]
"""The routers' commands with their kinds (``worldweave eval rgbd``, ``worldweave train weaver``)."""
COMMANDS = [*(name for name in SUBCOMMANDS if name not in ("eval", "train")), *KINDS]
"""Every command whose help lists options (the routers' kinds instead of the routers)."""


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_that_takes_a_value_states_its_default(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "``" not in help_text, "reStructuredText code marks must not reach the terminal"
    entries = _option_entries(help_text)
    assert "-h, --help" in entries
    valued = {name: text for name, text in entries.items() if " " in name.split(", ")[-1]}  # "--port PORT"
    assert valued, help_text
    usage = " ".join(help_text.split("\n\n", 1)[0].split())
    required = {name for name in valued if name in usage and f"[{name}]" not in usage}  # "--fuse A:B", unbracketed
    missing = [name for name, text in valued.items() if "default" not in text and name not in required]
    assert not missing, f"worldweave {command}: no default stated for {missing}"
    stated = [name for name in required if "default" in valued[name]]
    assert not stated, f"worldweave {command}: a default stated for the required {stated}"


QUICK_CALLS = [
    (["--help"], 0),
    (["--version"], 0),
    *(([*command.split(), "--help"], 0) for command in [*SUBCOMMANDS, *KINDS]),
    (["demo", "--no-such-flag"], 2),
    (["serve", "--port", "not-a-number"], 2),
    (["eval", "procedural", "--frames", "many"], 2),
]
"""Command lines that only parse: help, the version, a bad flag (with the exit status each must give)."""

_RUN_QUICK_CALLS = """
import contextlib, io, json, sys
from worldweave.server.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as done:
            codes.append(done.code)
    loaded = [name for name in ("torch", "numba", "open3d") if name in sys.modules]
    if loaded:
        sys.exit(f"'worldweave {' '.join(argv)}' imported {loaded}")
print(json.dumps(codes))
"""


def test_help_version_and_bad_flags_load_no_engine():
    """They answer in about a second: no torch, numba or Open3D (seconds each to load) is imported by any of them,
    one after another in one process; the engine loads when a command runs."""
    calls = [argv for argv, _ in QUICK_CALLS]
    out = subprocess.run([sys.executable, "-c", _RUN_QUICK_CALLS, json.dumps(calls)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [code for _, code in QUICK_CALLS]
