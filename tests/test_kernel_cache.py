"""The engine's numba cache folder is named by its sources, so a change to any engine module (say the hash table
other modules' kernels inline) never loads kernels compiled against the old one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from worldweave.bridge.kernel_cache import ENGINE_ROOT, sources_hash


def test_any_engine_source_change_names_a_new_cache(tmp_path):
    tree = tmp_path / "bridge"
    shutil.copytree(ENGINE_ROOT, tree, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    before = sources_hash(tree)
    assert before == sources_hash(tree)
    probe = tree / "memory" / "hash_table.py"
    probe.write_text(probe.read_text() + "\n# changed\n")
    changed = sources_hash(tree)
    assert changed != before
    (tree / "memory" / "hash_table.py").rename(tree / "memory" / "hash_table2.py")  # a rename counts too
    assert sources_hash(tree) not in (before, changed)


def cache_dir_seen(env: dict[str, str]) -> str:
    """numba's cache folder in a fresh interpreter that imported the engine under ``env``."""
    script = "import worldweave.bridge, numba; print(numba.config.CACHE_DIR)"
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return run.stdout.strip()


def test_the_engine_points_numba_at_its_own_folder_and_keeps_a_folder_you_set(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    expected = tmp_path / "cache" / "worldweave" / "numba" / sources_hash()
    assert cache_dir_seen(env) == str(expected) and expected.is_dir()
    assert cache_dir_seen({**env, "NUMBA_CACHE_DIR": str(tmp_path / "mine")}) == str(tmp_path / "mine")
    (tmp_path / "file").write_text("not a folder")
    assert cache_dir_seen({**env, "XDG_CACHE_HOME": str(tmp_path / "file")}) == ""  # numba's default kept
