"""``echo``: the zero-cost generator, for measuring serving overhead. No weights, no compute.

Each frame is the condition's woven memory render as it is (holes stay black, their depth 0 = unknown), and the
render's depth is returned as the frame's depth. A step then costs only the memory work (retrieve, render and weave,
integrate): what remains of a client's round trip is serving. ``benchmarks/bench_serving.py`` measures serving
overhead with it, and the tests against a real server (``tests/conftest.py``) use it. Confidence is memory's own
(the render's confidence channel) where the render covered the pixel with depth, and 0 elsewhere.
"""

from __future__ import annotations

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator, kept_confidence


class EchoGenerator(Generator):
    """Zero-cost generator: frames are the condition's renders (holes stay black, depth 0 and confidence 0 there)."""

    name = "echo"
    max_frames = 64
    max_width = 1920
    max_height = 1080
    returns_depth = True
    deterministic = True

    def generate(self, condition: Condition) -> GenerationResult:
        return GenerationResult(
            frames=tuple(render.rgb for render in condition.renders),
            depths=tuple(render.depth for render in condition.renders),
            confidences=tuple(kept_confidence(render) for render in condition.renders),
        )
