"""``SpatialMemory``: the world's memory behind one facade: the global voxel map plus local anchors.

* ``integrate`` fuses a frame into the voxel map and, when the keyframe policy says so, makes it a new anchor.
* ``retrieve`` picks anchors for a chunk of target poses (``coverage`` / ``iou`` / ``recent`` / ``random`` /
  ``global``, which picks none); ``render_anchors`` renders anchors at a pose and weaves them into one view;
  ``render_global`` renders the whole voxel map. ``World.condition`` puts these together into the generator's
  condition (the one place that decides between anchors and the global map).
* ``remove`` / ``recolor`` / ``insert`` edit the voxel map *and* every anchor, so removed content never comes back
  through an anchor.
* ``write`` / ``read`` put everything in a folder (arrays via ``bridge.storage``, no pickle); ``save`` / ``load``
  do it atomically.

World metres, OpenCV cameras, camera-to-world poses throughout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldweave.bridge.frames import RenderResult, RGBDFrame
from worldweave.bridge.memory.anchors import (
    Anchor,
    AnchorOptions,
    AnchorStore,
    KeyframePolicy,
    sketch_depth,
)
from worldweave.bridge.memory.retrieval import (
    RETRIEVAL_MODES,
    RetrievalMode,
    RetrievalOptions,
    chunk_coverage,
    frustum_candidates,
    retrieve,
)
from worldweave.bridge.memory.voxel_map import (
    DEFAULT_CONFIDENCE_LEVELS,
    IntegrateStats,
    Source,
    VoxelMap,
    check_confidence_levels,
)
from worldweave.bridge.memory.weave import WeaveOptions, weave
from worldweave.bridge.regions import Region
from worldweave.bridge.render import RenderBuffers, render_points
from worldweave.bridge.storage import (
    atomic_folder,
    read_manifest,
    resolve_folder,
    write_manifest,
)
from worldweave.proto.errors import InvalidInputError, StorageError
from worldweave.proto.geometry import Intrinsics, Pose

FORMAT_VERSION = 1


@dataclass
class MemoryConfig:
    """Every setting of a spatial memory: a plain record that round-trips through JSON (``to_dict``/``from_dict``)."""

    voxel_size_m: float = 0.02
    """Edge of the global voxel map's voxels, metres (0.005 or more)."""
    retrieval: RetrievalMode = "coverage"
    """Default retrieval mode of ``retrieve`` and ``World.condition``."""
    k: int = 7
    """Default maximum number of anchors per chunk (Spatia's sweet spot)."""
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    """When a fused frame becomes an anchor."""
    anchors: AnchorOptions = field(default_factory=AnchorOptions)
    """How a keyframe is down-sampled into anchor points."""
    retrieval_options: RetrievalOptions = field(default_factory=RetrievalOptions)
    """Thresholds of the geometric retrieval modes."""
    weave: WeaveOptions = field(default_factory=WeaveOptions)
    """Depth tolerances and weights of the weaver."""
    global_footprint_scale: float = 1.0
    """Footprint multiplier when the voxel map is rendered (``global`` mode); each voxel splats its edge length."""
    seed: int = 0
    """Seed of the ``random`` retrieval mode's generator."""
    confidence_levels: tuple[float, ...] = DEFAULT_CONFIDENCE_LEVELS
    """The minimum confidences the world's spatial queries and point-cloud stream accept (1 to 4 levels in [0, 1],
    kept sorted); below a query's level a voxel is unknown. The queries keep one surface copy per level used."""
    default_min_confidence: float | None = None
    """The level of a query that names none; one of ``confidence_levels`` (``None``: 0.5 when declared, else the
    highest; filled in at construction)."""

    def __post_init__(self) -> None:
        self.confidence_levels, self.default_min_confidence = check_confidence_levels(
            self.confidence_levels, self.default_min_confidence
        )
        if self.retrieval not in RETRIEVAL_MODES:
            raise InvalidInputError(f"retrieval must be one of {RETRIEVAL_MODES}, got {self.retrieval!r}")
        if not (isinstance(self.k, int) and self.k >= 1):
            raise InvalidInputError(f"k must be a positive integer, got {self.k!r}")
        if not self.global_footprint_scale > 0:
            raise InvalidInputError(f"global_footprint_scale must be > 0, got {self.global_footprint_scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemoryConfig:
        """From ``to_dict`` output; unknown keys raise ``InvalidInputError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        kinds = {"keyframes": KeyframePolicy, "anchors": AnchorOptions, "retrieval_options": RetrievalOptions,
                 "weave": WeaveOptions}
        unknown = set(values) - names
        if unknown:
            raise InvalidInputError(f"unknown memory config keys {sorted(unknown)}; known: {sorted(names)}")
        kwargs = {}
        for name, value in values.items():
            if name in kinds:
                known = {f.name for f in dataclasses.fields(kinds[name])}
                bad = set(value) - known
                if bad:
                    raise InvalidInputError(f"unknown keys {sorted(bad)} in memory config {name!r}; known: {sorted(known)}")
                value = kinds[name](**value)
            kwargs[name] = value
        return cls(**kwargs)

    def with_overrides(self, overrides: dict[str, Any]) -> MemoryConfig:
        """A copy with dotted keys replaced, e.g. ``{"k": 3, "weave.depth_tolerance_rel": 0.05}``."""
        values = self.to_dict()
        for key, value in overrides.items():
            target = values
            *path, last = key.split(".")
            for part in path:
                if not isinstance(target.get(part), dict):
                    raise InvalidInputError(f"memory config has no section {part!r} (in {key!r})")
                target = target[part]
            if last not in target:
                raise InvalidInputError(f"memory config has no setting {key!r}")
            target[last] = value
        return MemoryConfig.from_dict(values)


@dataclass(frozen=True)
class MemoryUpdate:
    """What ``integrate`` did: the voxel map's statistics, and the new anchor's id if the frame became a keyframe."""

    voxels: IntegrateStats
    anchor_id: int | None
    reason: str = ""
    """Why the frame did or did not become a keyframe (for logs)."""


class SpatialMemory:
    """Global voxel map + local anchors, with retrieval, rendering, weaving, edits and storage.

    ``config``: a ``MemoryConfig`` (copied). ``device``: where the voxel map lives and renders run ("cpu" uses the
    numba renderer, another device the torch one).
    """

    def __init__(self, config: MemoryConfig | None = None, *, device: torch.device | str = "cpu") -> None:
        self.config = dataclasses.replace(config) if config is not None else MemoryConfig()
        self.device = torch.device(device)
        self.voxel_map = VoxelMap(self.config.voxel_size_m, device=self.device)
        self.anchors = AnchorStore()
        self._rng = np.random.default_rng(self.config.seed)

    def __repr__(self) -> str:
        return f"SpatialMemory({len(self.voxel_map)} voxels, {len(self.anchors)} anchors, device={self.device})"

    # --------------------------------------------------------------------------------------------- integrate

    def view_coverage(self, pose: Pose, intrinsics: Intrinsics, valid_cells: np.ndarray | None = None) -> float:
        """Fraction of a view's retrieval cells that the existing anchors cover (with the coarse z-test).

        ``valid_cells``: (G,) bool, the cells that count (e.g. those where the new frame has depth); all by default.
        """
        index = self.anchors.index()
        options = self.config.retrieval_options
        rows = frustum_candidates(index, [pose], intrinsics, options)
        covered = chunk_coverage(index, rows, [pose], intrinsics, options).any_covered[0]
        if valid_cells is None:
            valid_cells = np.ones_like(covered)
        count = int(valid_cells.sum())
        return float((covered & valid_cells).sum()) / count if count else 1.0

    def integrate(
        self,
        frame: RGBDFrame,
        *,
        frame_id: int,
        source: Source = Source.GENERATED,
        exclude_mask: np.ndarray | None = None,
        exclude_regions: Sequence[Region] = (),
        anchor_weight: float = 1.0,
        observed: np.ndarray | None = None,
    ) -> MemoryUpdate:
        """Fuse ``frame`` into the voxel map and, if it is a keyframe, add it as an anchor.

        Both take the per-pixel ``frame.confidence`` from the frame: confidence-0 pixels (guesses) enter neither,
        the others weigh their confidence in the voxel map and give it to the anchor's points; only the pixels that
        enter count towards the keyframe decision, and a frame none of whose pixels enter the voxel map is no
        keyframe. ``exclude_mask`` (bool (H, W), True on dynamic pixels) and
        ``exclude_regions`` (world regions, e.g. dynamic boxes) keep content out of both. ``anchor_weight`` in (0, 1]
        weighs a new anchor as a whole in the weaver (``Anchor.confidence``; not the per-pixel confidence).
        ``observed``: bool (H, W), the pixels whose line of sight was observed, so that a new anchor's depth makes the
        space in front of them free (``Anchor.observed``); None: every pixel (a seed frame).
        """
        stats = self.voxel_map.integrate(
            frame, frame_id=frame_id, source=source, exclude_mask=exclude_mask, exclude_regions=exclude_regions,
            max_depth_m=self.config.anchors.max_depth_m,
        )
        if stats.points == 0:  # an anchor of no points would render nothing, yet be stored, saved and searched
            return MemoryUpdate(stats, None, "no pixel entered memory")
        fused_depth = frame.depth if frame.confidence is None else np.where(frame.confidence > 0, frame.depth, 0.0)
        _, valid_cells, _ = sketch_depth(fused_depth, frame.intrinsics)
        coverage = self.view_coverage(frame.pose, frame.intrinsics, valid_cells) if len(self.anchors) else 0.0
        add, reason = self.config.keyframes.decide(frame.pose, coverage, self.anchors)
        anchor_id = None
        if add:
            anchor = self.anchors.add_frame(
                frame, frame_id=frame_id, options=self.config.anchors, confidence=anchor_weight, source=source,
                exclude_mask=exclude_mask, exclude_regions=exclude_regions, observed=observed,
            )
            anchor_id = anchor.id
        return MemoryUpdate(stats, anchor_id, reason)

    # ---------------------------------------------------------------------------------------- retrieve, render

    def retrieval_settings(self, mode: RetrievalMode | None = None, k: int | None = None) -> tuple[RetrievalMode, int]:
        """The retrieval mode and K in force: those given, else the config's; raises ``InvalidInputError`` naming a bad
        one."""
        mode = self.config.retrieval if mode is None else mode
        k = self.config.k if k is None else k
        if mode not in RETRIEVAL_MODES:
            raise InvalidInputError(f"unknown retrieval mode {mode!r}; choose one of {RETRIEVAL_MODES}")
        if not (isinstance(k, (int, np.integer)) and k >= 1):
            raise InvalidInputError(f"k (anchors per chunk) must be a positive integer, got {k!r}")
        return mode, int(k)

    def retrieve(self, poses: Sequence[Pose], intrinsics: Intrinsics, *, mode: RetrievalMode | None = None,
                 k: int | None = None) -> list[Anchor]:
        """At most ``k`` anchors for the chunk of camera-to-world ``poses``, most relevant first (``global``: none)."""
        mode, k = self.retrieval_settings(mode, k)
        return retrieve(self.anchors, poses, intrinsics, mode=mode, k=k, options=self.config.retrieval_options,
                        rng=self._rng)

    def render_global(self, pose: Pose, intrinsics: Intrinsics) -> RenderResult:
        """Every voxel of the map at camera-to-world ``pose``, splatted (``config.weave.splat``) with its edge length
        (times ``config.global_footprint_scale``) as footprint, so a close surface has no holes; each covered pixel
        carries its voxel's confidence."""
        points, colors = self.voxel_map.points_tensor()
        return render_points(
            points, colors, pose, intrinsics, splat=self.config.weave.splat,
            point_size_m=self.voxel_map.voxel_size_m * self.config.global_footprint_scale,
            footprint_falloff=self.config.weave.footprint_falloff, confidence=self.voxel_map.confidence_tensor(),
        )

    def render_anchors(self, anchors: Sequence[Anchor], pose: Pose, intrinsics: Intrinsics,
                       weave_options: WeaveOptions | None = None) -> RenderResult:
        """Render each anchor at ``pose`` and weave the renders into one view (``weave_options``: default the
        config's). The anchors render into the rows of one stack of arrays, which the weave reads as they are."""
        options = self.config.weave if weave_options is None else weave_options
        count, (h, w) = len(anchors), intrinsics.shape
        stack = RenderBuffers(np.empty((count, h, w, 3), np.uint8), np.empty((count, h, w), np.float32),
                              np.empty((count, h, w), bool), np.empty((count, h, w), np.float32))
        renders = [
            a.render(pose, intrinsics, splat=options.splat, footprint_scale=options.footprint_scale,
                     footprint_falloff=options.footprint_falloff, device=self.device,
                     out=RenderBuffers(*(array[i] for array in stack)))
            for i, a in enumerate(anchors)
        ]
        positions = np.array([a.pose.position for a in anchors]).reshape(-1, 3)
        return weave(renders, positions, [a.confidence for a in anchors], pose, intrinsics, options,
                     frame_ids=[a.frame_id for a in anchors], seeded=[a.source == Source.SEED for a in anchors])

    # ------------------------------------------------------------------------------------------------- edits

    def remove(self, region: Region) -> int:
        """Remove everything in ``region`` from the voxel map and every anchor; returns voxels removed."""
        removed = self.voxel_map.remove(region)
        self.anchors.remove(region)
        return removed

    def recolor(self, region: Region, rgb: Sequence[int]) -> int:
        """Recolour everything in ``region`` in the voxel map and every anchor; returns voxels recoloured."""
        changed = self.voxel_map.recolor(region, rgb)
        self.anchors.recolor(region, rgb)
        return changed

    def insert(self, points_m: np.ndarray, colors: np.ndarray, *, semantic_class: int = 0, instance_id: int = 0) -> int:
        """Insert world points (metres) with uint8 colours into the voxel map and into every anchor that sees them
        (each point splats one voxel edge); returns voxels touched. ``semantic_class`` / ``instance_id``: labels of
        the touched voxels (``VoxelMap.insert``; anchors carry no labels)."""
        touched = self.voxel_map.insert(points_m, colors, semantic_class=semantic_class, instance_id=instance_id)
        self.anchors.insert(points_m, colors, self.voxel_map.voxel_size_m)
        return touched

    # ----------------------------------------------------------------------------------------------- storage

    def write(self, folder: Path) -> None:
        """Write into an existing empty ``folder`` (not atomic; ``save`` wraps it)."""
        folder = Path(folder)
        (folder / "voxels").mkdir()
        (folder / "anchors").mkdir()
        self.voxel_map.write(folder / "voxels")
        self.anchors.write(folder / "anchors")
        write_manifest(folder, {
            "kind": "spatial_memory", "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
            "files": {"voxels/": "the global voxel map", "anchors/": "the anchor store"},
        })

    @classmethod
    def read(cls, folder: Path, *, device: torch.device | str = "cpu") -> SpatialMemory:
        """Read a memory written by ``write``."""
        folder = Path(folder)
        manifest = read_manifest(folder, "spatial_memory", (FORMAT_VERSION,))
        try:
            config = MemoryConfig.from_dict(manifest["config"])
        except (KeyError, TypeError, InvalidInputError) as error:
            raise StorageError(f"memory config in {folder} is malformed: {error}") from error
        memory = cls(config, device=device)
        memory.voxel_map = VoxelMap.read(folder / "voxels", device=device)
        memory.anchors = AnchorStore.read(folder / "anchors")
        return memory

    def save(self, folder: str | Path) -> Path:
        """Save atomically to ``folder`` (a crash mid-save leaves the previous save intact)."""
        with atomic_folder(folder) as tmp:
            self.write(tmp)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str = "cpu") -> SpatialMemory:
        """Load a memory saved with ``save``."""
        return cls.read(resolve_folder(folder), device=device)
