"""``check_generator``: a conformance check a backend author runs (like gymnasium's ``check_env``).

It builds synthetic conditions at sizes the backend declares it accepts, calls ``generate`` and checks the result
against the protocol in ``base``: frame count, dtype and shape, depth when declared, one confidence per frame (float32,
the frame's shape, finite, in [0, 1]) that never exceeds memory's on the pixels kept from the render (the render's
confidence channel; kept: covered pixels whose depth comes back unchanged, or every covered pixel of a backend that
returns no depth), determinism for a fixed seed.
Each failure names the likely cause.
"""

from __future__ import annotations

import numpy as np

from worldweave.bridge.frames import RenderResult, confidence_problem
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.proto.errors import WorldweaveError
from worldweave.proto.geometry import Intrinsics, Pose


class GeneratorCheckError(WorldweaveError):
    """A backend breaks the generator protocol; the message lists every problem found."""


def _condition(generator: Generator, frames: int, seed: int) -> Condition:
    size = 4 * generator.size_multiple * max(1, 16 // (4 * generator.size_multiple))
    width, height = min(size * 2, generator.max_width), min(size, generator.max_height)
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=60.0)
    rng = np.random.default_rng(seed)
    renders = []
    for _ in range(frames):
        mask = rng.uniform(size=(height, width)) < 0.7
        rgb = np.where(mask[..., None], rng.integers(0, 256, (height, width, 3)), 0).astype(np.uint8)
        depth = np.where(mask, rng.uniform(1.0, 3.0, (height, width)), 0).astype(np.float32)
        confidence = rng.choice(np.array([0.4, 1.0], np.float32), size=(height, width))  # some half-sure memory
        renders.append(RenderResult(rgb, depth, mask, confidence))
    poses = tuple(Pose.look_at([0.0, 0.05 * i, 1.0], [2.0, 0.05 * i, 1.0]) for i in range(frames))
    reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Condition(poses, intrinsics, tuple(renders), references=(reference,), prompt="a test room", seed=seed)


def _problems_with(generator: Generator, condition: Condition, result: GenerationResult) -> list[str]:
    n, shape = len(condition), condition.intrinsics.shape
    problems = []
    if not isinstance(result, GenerationResult):
        return [f"generate() returned {type(result).__name__}, not a GenerationResult"]
    if len(result.frames) != n:
        problems.append(f"{n} poses gave {len(result.frames)} frames: generate() must return one frame per pose, "
                        "padding frames included (the world loop drops them)")
    for i, frame in enumerate(result.frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (*shape, 3):
            problems.append(f"frame {i} is {getattr(frame, 'dtype', type(frame).__name__)} "
                            f"{getattr(frame, 'shape', '')}; expected uint8 {(*shape, 3)} RGB (undo any resize/padding)")
    if generator.returns_depth:
        if result.depths is None or len(result.depths) != n:
            problems.append("returns_depth is True but depths are missing or not one per frame")
        else:
            for i, depth in enumerate(result.depths):
                if depth.shape != shape or not np.issubdtype(depth.dtype, np.floating):
                    problems.append(f"depth {i} is {depth.dtype} {depth.shape}; expected float32 {shape} metres")
                elif not np.all(np.isfinite(depth)) or (depth < 0).any():
                    problems.append(f"depth {i} has NaN, inf or negative values; use 0 for unknown")
    confidences = result.confidences
    if not isinstance(confidences, (tuple, list)) or len(confidences) != n:
        count = len(confidences) if isinstance(confidences, (tuple, list)) else type(confidences).__name__
        problems.append(f"{n} poses gave confidences {count}: GenerationResult.confidences needs one float32 (H, W) "
                        "array per frame (memory's confidence where its pixel was kept, 0 for guesses)")
    else:
        for i, confidence in enumerate(confidences):
            problem = confidence_problem(confidence, shape)
            if problem is None and confidence.dtype != np.float32:
                problem = f"is {confidence.dtype}; expected float32"
            if problem is not None:
                problems.append(f"confidence {i} {problem}")
                continue
            render = condition.renders[i]
            kept = render.kept
            if generator.returns_depth and result.depths is not None and i < len(result.depths):
                kept &= np.asarray(result.depths[i]) == render.depth
            over = kept & (confidence > render.confidence + 1e-6)
            if over.any():
                v, u = np.argwhere(over)[0]
                problems.append(f"confidence {i} is {float(confidence[v, u])} at kept pixel (u={u}, v={v}) where memory's "
                                f"is {float(render.confidence[v, u])}: a pixel kept from the render must carry memory's "
                                "confidence (base.kept_confidence), never more")
    return problems


def check_generator(generator: Generator) -> None:
    """Raise ``GeneratorCheckError`` listing every way ``generator`` breaks the protocol; return quietly if none."""
    cls = type(generator)
    problems = []
    for attr in ("chunk_multiple", "max_frames", "max_width", "max_height", "size_multiple"):
        value = getattr(cls, attr, None)
        if not isinstance(value, int) or value < 1:
            problems.append(f"class attribute {attr} must be a positive int, got {value!r}")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        problems.append("class attribute name must be a non-empty string (the registry name)")
    if problems:
        raise GeneratorCheckError("; ".join(problems))
    sizes = sorted({cls.padded_chunk(1), cls.padded_chunk(min(2, cls.max_frames))})
    for frames in sizes:
        if not cls.valid_chunk(frames):
            problems.append(f"padded_chunk gave {frames}, which valid_chunk rejects: check chunk_multiple/chunk_offset")
            continue
        condition = _condition(generator, frames, seed=frames)
        try:
            first = generator.generate(condition)
        except Exception as error:  # a checker reports whatever the backend raised, as the backend's problem
            problems.append(f"generate() raised {type(error).__name__}: {error} for a valid {frames}-frame chunk")
            continue
        found = _problems_with(generator, condition, first)
        problems += found
        if not found:
            again = generator.generate(condition)
            if any(not np.array_equal(a, b) for a, b in zip(first.frames, again.frames)):
                problems.append("two calls with the same condition and seed gave different frames: seed every "
                                "random source from Condition.seed")
            if any(not np.array_equal(a, b) for a, b in zip(first.confidences, again.confidences)):
                problems.append("two calls with the same condition and seed gave different confidences: seed every "
                                "random source from Condition.seed")
    if problems:
        raise GeneratorCheckError(f"{cls.__name__} ({cls.name!r}) breaks the generator protocol: " + "; ".join(problems))
