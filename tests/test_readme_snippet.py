"""The README's client snippet ("Serving worlds"), run as written against a real server on loopback, and
``examples/minimal_client.py`` holding the same code word for word."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# " + "-" * 83 + ' README.md, "Serving worlds"\n'


def readme_snippet() -> str:
    """The Python blocks of README.md's "Serving worlds" section, joined in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Serving worlds"):text.index("\n## ", text.index("## Serving worlds") + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, f"expected the two client blocks, found {len(blocks)}"
    return "\n".join(blocks)


def test_the_example_is_the_readme_snippet_word_for_word():
    example = (ROOT / "examples" / "minimal_client.py").read_text()
    assert MARKER in example, "examples/minimal_client.py lost its marker line"
    body = example.split(MARKER, 1)[1]
    assert body.startswith(readme_snippet()), "README.md's client snippet and examples/minimal_client.py differ"


def test_the_readme_snippet_runs_as_written(server, monkeypatch, capsys):
    monkeypatch.setenv("WORLDWEAVE_SERVER", server.address)
    namespace: dict = {}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("1.")  # the API version
    assert printed[1:5] == [f"{i} (240, 320, 3) float32" for i in (1, 2, 3, 4)]  # frame ids in pose order, shapes
    hits = namespace["hits"]
    assert hits.hit.all() and not hits.unknown.any()
    # Every ray leaves (0, 0, 1.5) and meets the seeded wall at x = 3 m: distance 3 / cos(angle off +x).
    directions = namespace["directions"]
    expected_m = 3.0 * np.linalg.norm(directions, axis=1) / directions[:, 0]
    np.testing.assert_allclose(hits.distance_m, expected_m, atol=0.03)  # within a voxel and a half
    mirror, positions_m = namespace["mirror"], namespace["positions_m"]
    assert mirror.version > namespace["world"].version  # four steps and an edit since the world was created
    inside = np.all((positions_m >= [2.5, -0.5, 1.0]) & (positions_m <= [3.5, 0.5, 2.0]), axis=1)
    assert inside.any(), "the wall was in the removed box before the edit"
    after, _ = mirror.points()
    assert not np.all((after >= [2.5, -0.5, 1.0]) & (after <= [3.5, 0.5, 2.0]), axis=1).any()
    assert len(after) == len(positions_m) - inside.sum()
