"""The generator protocol: what a backend receives (``Condition``), returns (``GenerationResult``) and declares.

A backend subclasses ``Generator`` and sets its class attributes (like gymnasium's ``action_space``): the chunk
rule (``chunk_multiple``/``chunk_offset``: valid frame counts are ``chunk_offset + chunk_multiple * k``), the
largest chunk and image, the size multiple, and whether it returns depth. The world loop pads short chunks by
holding the last pose and drops the padded frames, so a backend only ever sees
frame counts its rule allows. ``check_generator`` (in ``checker``) tests a backend against this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from worldweave.bridge.frames import RenderResult
from worldweave.proto.errors import InvalidInputError, LimitExceededError
from worldweave.proto.geometry import Intrinsics, Pose


@dataclass(eq=False)
class GeneratorState:
    """What a generator keeps of one world between its steps (``continue``'s remembered surfaces), under the
    generator's name in ``values``.

    A ``World`` owns one and hands it to every condition, so worlds that share a generator (a server's) neither see
    nor race on what it keeps of the others. A new world starts with an empty one; a saved world, a checkpoint and a
    fork keep theirs (``Generator.state_arrays``), so they continue as the world would have; an edit of memory empties
    it (what it kept may have been removed or recoloured)."""

    values: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """Everything a generator is conditioned on for one chunk of N target views.

    ``poses``: N camera-to-world poses (OpenCV camera, metres). ``intrinsics``: shared by all N views.
    ``renders``: N woven memory renders at those poses (rgb, depth metres, covered mask). ``references``: retrieved
    anchors' source images, uint8 (H, W, 3) each, most relevant first. ``leading_frames``: the last generated
    frames before this chunk, oldest first (may be empty). ``prompt``: text, may be empty. ``seed``: for any
    randomness, so a step is deterministic given its inputs. ``state``: the world's ``GeneratorState`` (None when a
    caller drives the generator outside a world: a generator that keeps state then keeps its own).
    """

    poses: tuple[Pose, ...]
    intrinsics: Intrinsics
    renders: tuple[RenderResult, ...]
    references: tuple[np.ndarray, ...] = ()
    leading_frames: tuple[np.ndarray, ...] = ()
    prompt: str = ""
    seed: int = 0
    state: GeneratorState | None = None

    def __post_init__(self) -> None:
        if len(self.poses) == 0:
            raise InvalidInputError("a condition needs at least one pose")
        if len(self.renders) != len(self.poses):
            raise InvalidInputError(f"{len(self.poses)} poses but {len(self.renders)} renders")
        for i, render in enumerate(self.renders):
            if render.mask.shape != self.intrinsics.shape:
                raise InvalidInputError(f"render {i} has shape {render.mask.shape}, intrinsics say {self.intrinsics.shape}")

    def __len__(self) -> int:
        return len(self.poses)


@dataclass(frozen=True)
class GenerationResult:
    """N generated frames, uint8 (H, W, 3), N per-pixel confidences, and, when the backend ``returns_depth``, N
    float32 (H, W) depths in metres along the optical axis (0 = unknown).

    ``confidences`` (keyword, required of every backend): N float32 (H, W) arrays in [0, 1], one per frame: how sure
    the backend is that the pixel's depth is a real surface at that depth. For pixels kept from the memory render,
    memory's own confidence there (``kept_confidence``: the render's ``confidence`` channel, never more, so what was
    fused as a half-sure continuation comes back half-sure, not certain; a backend returning depth may take depth and
    confidence from ``kept_depth``, which refits footprint pixels on the plane of the landed ones); 0 for pure
    guesses (filled holes nothing supports). The world fuses each pixel with a weight proportional to its
    confidence and never fuses a confidence-0 pixel. A backend that returns no depth states its trust in each pixel's
    content; the world then fuses the depth estimator's depth aligned to memory and multiplies these confidences by
    that depth's agreement with memory (``depth.depth_agreement``: 0 where memory has no depth to compare).
    """

    frames: tuple[np.ndarray, ...]
    depths: tuple[np.ndarray, ...] | None = None
    info: dict = field(default_factory=dict)
    """Backend-specific details for logs (timings, model id); never needed by the caller."""
    confidences: tuple[np.ndarray, ...] = field(kw_only=True)


def kept_confidence(render: RenderResult) -> np.ndarray:
    """float32 (H, W): the confidence a backend returns for the pixels it keeps from ``render`` (memory's confidence
    where the render covers the pixel with depth, 0 elsewhere). The render's confidence is 0 on the pixels a memory
    point's footprint only spreads over (``bridge.render``): their depth lies off the surface, so they are shown but
    never fused again."""
    return np.where(render.kept, render.confidence, np.float32(0)).astype(np.float32)


class Generator(ABC):
    """Base class of every generation backend. Subclasses set the class attributes and implement ``generate``."""

    name: ClassVar[str]
    """Registry name, chosen in config and by ``worldweave serve --generator``."""
    chunk_multiple: ClassVar[int] = 1
    chunk_offset: ClassVar[int] = 0
    """Valid chunk sizes are ``chunk_offset + chunk_multiple * k`` with k >= 0 (and at least 1 frame): 1 and 0 for
    frame-by-frame backends, 4 and 1 for Wan's 4k+1."""
    max_frames: ClassVar[int] = 1
    """Largest chunk (frames per ``generate`` call)."""
    max_width: ClassVar[int] = 1920
    max_height: ClassVar[int] = 1080
    size_multiple: ClassVar[int] = 1
    """Width and height the backend accepts must be multiples of this (the backend pads or resizes internally)."""
    returns_depth: ClassVar[bool] = False
    deterministic: ClassVar[bool] = False
    """Whether ``generate``'s output is a function of its ``Condition`` alone (the world's ``GeneratorState`` it
    carries included), bit for bit on one device and software stack, with no state of its own kept between calls.
    A recorded world's steps are re-run on replay when its generator is deterministic and returns depth; otherwise
    the log keeps the generated frames (``server.record_log``). A deterministic generator must also take concurrent
    calls from several threads (no scratch shared between calls): a server runs different worlds' calls to it at
    once (``server.scheduling.share_generator``)."""

    @classmethod
    def valid_chunk(cls, frames: int) -> bool:
        """Whether ``frames`` is a chunk size this backend accepts."""
        return 1 <= frames <= cls.max_frames and (frames - cls.chunk_offset) % cls.chunk_multiple == 0 and frames >= cls.chunk_offset

    @classmethod
    def padded_chunk(cls, frames: int) -> int:
        """The smallest valid chunk size >= ``frames``."""
        if frames < 1:
            raise InvalidInputError(f"a chunk needs at least one frame, got {frames}")
        size = max(frames, cls.chunk_offset, 1)
        while not cls.valid_chunk(size):
            size += 1
            if size > cls.max_frames:
                raise LimitExceededError(f"{cls.name} takes at most {cls.max_frames} frames per chunk, asked for {frames}")
        return size

    @classmethod
    def check_size(cls, intrinsics: Intrinsics) -> None:
        """Raise ``LimitExceededError`` when the image is larger than the backend allows."""
        if intrinsics.width > cls.max_width or intrinsics.height > cls.max_height:
            raise LimitExceededError(
                f"{cls.name} generates at most {cls.max_width}x{cls.max_height}, asked for {intrinsics.width}x{intrinsics.height}"
            )

    @abstractmethod
    def generate(self, condition: Condition) -> GenerationResult:
        """Generate ``len(condition)`` frames (a valid chunk size) at the condition's poses."""

    def state_arrays(self, value: object) -> dict[str, np.ndarray]:
        """What this backend keeps of a world (its entry in the world's ``GeneratorState``) as named arrays, saved
        with the world; ``state_from_arrays`` reads them back. A backend that keeps none is never asked."""
        raise NotImplementedError(f"generator {self.name!r} keeps no state of a world")

    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> object:
        """The state ``state_arrays`` wrote, read back from its arrays."""
        raise NotImplementedError(f"generator {self.name!r} keeps no state of a world")
