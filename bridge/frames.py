"""Image records that pass between memory, renderer and generators: ``RGBDFrame`` and ``RenderResult``.

Images are RGB8, H x W x 3, row-major. Depth is float32 metres along the optical axis; 0 means unknown.
Both types hold numpy arrays (the wire and the generators speak numpy); the torch kernels convert at their edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldweave.proto.errors import InvalidFrameError
from worldweave.proto.geometry import Intrinsics, Pose


def check_rgb(rgb: np.ndarray, shape: tuple[int, int], name: str = "rgb") -> np.ndarray:
    """Return ``rgb`` as a C-contiguous uint8 (H, W, 3) array, or raise naming the mismatch."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise InvalidFrameError(f"{name} must be uint8 RGB, got dtype {rgb.dtype}")
    if rgb.shape != (*shape, 3):
        raise InvalidFrameError(f"{name} must have shape {(*shape, 3)} (H, W, 3), got {rgb.shape}")
    return np.ascontiguousarray(rgb)


def check_depth(depth: np.ndarray, shape: tuple[int, int], name: str = "depth") -> np.ndarray:
    """Return ``depth`` as float32 (H, W) metres with NaN/inf/negative rejected, or raise naming the problem."""
    depth = np.asarray(depth)
    if depth.shape != shape:
        raise InvalidFrameError(f"{name} must have shape {shape} (H, W), got {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise InvalidFrameError(f"{name} must be float metres, got dtype {depth.dtype}")
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    if not depth.size or (depth.min() >= 0 and depth.max() < np.inf):  # a NaN makes min and max NaN
        return depth
    bad = ~np.isfinite(depth) | (depth < 0)
    if bad.any():
        v, u = np.argwhere(bad)[0]
        raise InvalidFrameError(f"{name} has an invalid value {float(depth[v, u])} at pixel (u={u}, v={v}); use 0 for unknown")
    return depth


def confidence_problem(confidence: object, shape: tuple[int, int]) -> str | None:
    """Why ``confidence`` is not a float (H, W) array of finite values in [0, 1] for an image of ``shape`` (the
    offending pixel and value named), or ``None`` when it is one. The one rule for per-pixel confidence, shared by
    frames, the generator checker and the world loop."""
    if not isinstance(confidence, np.ndarray):
        return f"must be a float (H, W) numpy array, got {type(confidence).__name__}"
    if confidence.shape != shape:
        return f"must have shape {shape} (H, W), got {confidence.shape}"
    if not np.issubdtype(confidence.dtype, np.floating):
        return f"must be float in [0, 1], got dtype {confidence.dtype}"
    if not confidence.size or (confidence.min() >= 0 and confidence.max() <= 1):  # a NaN makes min/max NaN
        return None
    bad = ~((confidence >= 0) & (confidence <= 1))  # NaN fails both comparisons
    if bad.any():
        v, u = np.argwhere(bad)[0]
        return f"has {float(confidence[v, u])} at pixel (u={u}, v={v}); confidence must be finite and in [0, 1]"
    return None


def check_confidence(confidence: np.ndarray, shape: tuple[int, int], name: str = "confidence") -> np.ndarray:
    """Return ``confidence`` as a C-contiguous float32 (H, W) array in [0, 1], or raise naming the problem."""
    problem = confidence_problem(np.asarray(confidence), shape)
    if problem is not None:
        raise InvalidFrameError(f"{name} {problem}")
    return np.ascontiguousarray(confidence, dtype=np.float32)


LABEL_DTYPES = {"semantic": np.dtype(np.uint16), "instance": np.dtype(np.uint32)}
"""The dtype of each label image: semantic classes uint16, instance ids uint32; 0 means unlabelled in both."""


def check_labels(labels: np.ndarray, shape: tuple[int, int], kind: str, name: str | None = None) -> np.ndarray:
    """Return a ``kind`` (``"semantic"`` or ``"instance"``) label image as a C-contiguous (H, W) array of
    ``LABEL_DTYPES[kind]``; any integer dtype whose values fit is accepted, anything else raises naming the problem."""
    labels = np.asarray(labels)
    name = name or kind
    dtype = LABEL_DTYPES[kind]
    if labels.shape != shape:
        raise InvalidFrameError(f"{name} must have shape {shape} (H, W), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidFrameError(f"{name} must be integer labels ({dtype.name}, 0 = unlabelled), got dtype {labels.dtype}")
    if labels.dtype != dtype and labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > np.iinfo(dtype).max:
            raise InvalidFrameError(f"{name} values must lie in 0..{np.iinfo(dtype).max} ({dtype.name}), got {low}..{high}")
    return np.ascontiguousarray(labels, dtype=dtype)


def check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a bool (H, W) array, or raise naming the mismatch."""
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise InvalidFrameError(f"{name} must have shape {shape} (H, W), got {mask.shape}")
    if mask.dtype != np.bool_:
        raise InvalidFrameError(f"{name} must be boolean, got dtype {mask.dtype}")
    return mask


@dataclass(frozen=True)
class RGBDFrame:
    """A colour image with metric depth, seen from ``pose`` through ``intrinsics``.

    ``rgb``: uint8 (H, W, 3). ``depth``: float32 (H, W) metres along the optical axis, 0 = unknown.
    ``confidence``: float32 (H, W) in [0, 1], how sure the source is that each pixel's depth is a real surface at
    that depth (a generator's ``GenerationResult.confidences``); ``None`` means 1 everywhere (seed frames, sensor
    data). Fusion skips confidence-0 pixels and weighs the others by their confidence.
    ``semantic``: uint16 (H, W) class per pixel and ``instance``: uint32 (H, W) instance id per pixel, 0 = unlabelled
    (a seed frame that comes with label images; ``None``: none). The voxel map takes them on fusion
    (``bridge.memory.labels`` states the rule).
    H and W must equal ``intrinsics.height`` and ``intrinsics.width``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    pose: Pose
    intrinsics: Intrinsics
    confidence: np.ndarray | None = None
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rgb", check_rgb(self.rgb, self.intrinsics.shape))
        object.__setattr__(self, "depth", check_depth(self.depth, self.intrinsics.shape))
        if self.confidence is not None:
            object.__setattr__(self, "confidence", check_confidence(self.confidence, self.intrinsics.shape))
        for kind in LABEL_DTYPES:
            if getattr(self, kind) is not None:
                object.__setattr__(self, kind, check_labels(getattr(self, kind), self.intrinsics.shape, kind))


@dataclass(frozen=True)
class RenderResult:
    """What a renderer or weaver produces for one view.

    ``rgb``: uint8 (H, W, 3), zero where not covered. ``depth``: float32 (H, W) metres, 0 where not covered.
    ``mask``: bool (H, W), True where memory covered the pixel. ``confidence``: float32 (H, W) in [0, 1], memory's
    confidence in each covered pixel's depth (the confidence of the voxels or anchor points rendered there, see
    ``RGBDFrame.confidence``), 0 where not covered; ``None`` at construction means 1 on every covered pixel (after it,
    always an array). A generator that keeps a pixel from the render returns this confidence for it, never more, so a
    guess fused once does not come back as a certainty.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = np.asarray(self.mask).shape
        if len(shape) != 2:
            raise InvalidFrameError(f"mask must be (H, W), got shape {shape}")
        object.__setattr__(self, "mask", check_mask(self.mask, shape))
        object.__setattr__(self, "rgb", check_rgb(self.rgb, shape))
        object.__setattr__(self, "depth", check_depth(self.depth, shape))
        if self.confidence is None:
            confidence = self.mask.astype(np.float32)
        else:
            # times the mask: 0 where not covered, as np.where would give, in one pass without its branch per pixel
            confidence = check_confidence(self.confidence, shape, "render confidence") * self.mask
        object.__setattr__(self, "confidence", confidence)

    @classmethod
    def unchecked(cls, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, confidence: np.ndarray) -> RenderResult:
        """A render whose arrays a renderer's kernel has just written, taken as they are: already C-contiguous, of
        the documented dtypes and shapes, depth finite and >= 0, confidence in [0, 1] and 0 where not covered. Skips
        the construction's checks, four passes over the pixels and a copy of the confidence; ``bridge.render``'s
        tests hold its kernels to them."""
        result = object.__new__(cls)
        for name, value in (("rgb", rgb), ("depth", depth), ("mask", mask), ("confidence", confidence)):
            object.__setattr__(result, name, value)
        return result

    def copy(self) -> RenderResult:
        """A render equal to this one whose arrays are its own (copies, not checked again)."""
        return RenderResult.unchecked(self.rgb.copy(), self.depth.copy(), self.mask.copy(), self.confidence.copy())

    @property
    def kept(self) -> np.ndarray:
        """bool (H, W): the pixels memory covered with depth (what a generator keeps from the render)."""
        return self.mask & (self.depth > 0)

    @property
    def coverage(self) -> float:
        """Fraction of pixels covered, in [0, 1]."""
        return np.count_nonzero(self.mask) / self.mask.size  # the mean of a bool image, without a float copy of it

    @classmethod
    def empty(cls, intrinsics: Intrinsics) -> RenderResult:
        """A render that covers nothing."""
        h, w = intrinsics.shape
        return cls(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.float32), np.zeros((h, w), bool))
