"""``echo``: the zero-cost generator, for measuring serving overhead. No weights, no compute.

Each frame is the condition's woven memory render as it is (holes stay black, their depth 0 = unknown), and the
render's depth is returned as the frame's depth. A step then costs only the memory work (retrieve, render and weave,
integrate): what remains of a client's round trip is serving. ``benchmarks/bench_serving.py`` measures serving
overhead with it, and the tests against a real server (``tests/conftest.py``) use it. Confidence is 1 where the
render covered the pixel with depth (memory's own content) and 0 elsewhere.
"""

from __future__ import annotations

import numpy as np

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator


class EchoGenerator(Generator):
    """Zero-cost generator: frames are the condition's renders (holes stay black, depth 0 and confidence 0 there)."""

    name = "echo"
    max_frames = 64
    max_width = 1920
    max_height = 1080
    returns_depth = True

    def generate(self, condition: Condition) -> GenerationResult:
        return GenerationResult(
            frames=tuple(render.rgb for render in condition.renders),
            depths=tuple(render.depth for render in condition.renders),
            confidences=tuple((render.mask & (render.depth > 0)).astype(np.float32) for render in condition.renders),
        )
