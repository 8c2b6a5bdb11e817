"""``World``: where a pose becomes a frame. Poses in, generated frames out, memory updated.

``World.step`` reads as numbered stages, per chunk of poses: 1 retrieve anchors covering the chunk, 2 render and
weave them at every pose, 3 generate, 4 depth and confidence for fusion (the generator's, or an estimator's depth
aligned to the render; 0 for the pixels kept from memory along lines of sight no keyframe saw through:
``line_of_sight``), 5 integrate into memory (each pixel weighted by its confidence; guesses, dynamic pixels and
boxes left out). Chunks follow the generator's frame-count rule: a short chunk is padded by holding its last pose and
the padded frames are dropped. A step may carry a camera rig (``proto.rig.Rig``): stages 1-3 then run per camera over
the chunk's body poses, and 4-5 fuse each body pose's frames from all cameras as one memory version.
A world is deterministic given its seed frames, config and the inputs of every step.

Stages 1 and 2 are ``World.condition``, the one path from memory to the generator's condition: ``step`` and
``render`` call it, and so does the real-data evaluation (``bridge.eval.rgbd``). A world also answers for its
state: ``World.queries`` (raycast, nearest surface, collision, occupancy, crop; kept current through steps and
edits) and ``World.changes_since`` (the voxel map's changes since a version, or a snapshot).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldweave.bridge.checkpoints import (
    CheckpointInfo,
    CheckpointStore,
    WorldSnapshot,
    freeze_world,
    thaw_world_into,
)
from worldweave.bridge.cores import holding_core
from worldweave.bridge.frames import RenderResult, RGBDFrame, check_mask, confidence_problem
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator, GeneratorState
from worldweave.bridge.generators.depth import DepthEstimator, align_depth, depth_agreement
from worldweave.bridge.generators.registry import (
    DEFAULT_GENERATOR,
    create_depth_estimator,
    create_generator,
)
from worldweave.bridge.line_of_sight import observed_lines, unseen_kept_pixels
from worldweave.bridge.memory.anchors import Anchor, AnchorIndex, AnchorStore
from worldweave.bridge.memory.labels import LabelImages, LabelRequest, check_ids, render_labels
from worldweave.bridge.memory.retrieval import RetrievalMode
from worldweave.bridge.memory.voxel_keys import check_extent
from worldweave.bridge.memory.spatial_memory import MemoryConfig, SpatialMemory
from worldweave.bridge.memory.voxel_map import Source, VoxelChanges, VoxelSet
from worldweave.bridge.memory.weave import WeaveOptions
from worldweave.bridge.queries import WorldQueries
from worldweave.bridge.regions import Region
from worldweave.bridge.storage import (
    atomic_folder,
    load_array,
    read_manifest,
    resolve_folder,
    save_array,
    write_manifest,
)
from worldweave.proto.errors import (
    InvalidFrameError,
    InvalidInputError,
    LimitExceededError,
    PreconditionError,
    StorageError,
)
from worldweave.proto.geometry import Intrinsics, Pose
from worldweave.proto.rig import Rig

FORMAT_VERSION = 1
STAGES = ("retrieve", "render_weave", "generate", "depth", "integrate")
"""Names of the timed stages of a step, in order; ``StepResult.timings_s`` also has ``total``."""


@dataclass
class WorldConfig:
    """How a world remembers and generates. A plain record: ``to_dict`` / ``from_dict`` round-trip through JSON."""

    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """Voxel size, retrieval mode and K, keyframe policy, weaver options."""
    generator: str = DEFAULT_GENERATOR
    """Generator backend by registry name (``worldweave.bridge.generators.registry.available()``)."""
    generator_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options for the generator's constructor (e.g. a local weights folder)."""
    depth_estimator: str = ""
    """Depth estimator by registry name, used when the generator returns no depth ("" = none)."""
    depth_estimator_options: dict[str, Any] = field(default_factory=dict)
    leading_frames: int = 1
    """How many of the last generated frames each chunk gets as leading frames (continuity between chunks)."""
    max_poses_per_step: int = 256
    """Largest number of poses one ``step`` accepts."""
    seed: int = 0
    """Base of the per-step random seed (step seed = seed + first frame id of the step, unless given)."""

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["memory"] = self.memory.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        values = dict(values)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"unknown world config fields {sorted(unknown)}")
        memory = MemoryConfig.from_dict(values.pop("memory", {}))
        return cls(memory=memory, **values)


@dataclass(frozen=True)
class Seed:
    """What a world starts from: one or more RGB-D frames (same intrinsics) and an optional prompt."""

    frames: tuple[RGBDFrame, ...]
    prompt: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        if not self.frames:
            raise InvalidInputError("a world seed needs at least one RGB-D frame")
        first = self.frames[0].intrinsics
        for i, frame in enumerate(self.frames):
            if frame.intrinsics != first:
                raise InvalidInputError(f"seed frame {i} has intrinsics {frame.intrinsics}, frame 0 has {first}")
            if not (frame.depth > 0).any():
                raise InvalidFrameError(f"seed frame {i} has no valid depth: memory cannot start from it")


@dataclass(frozen=True)
class QueryReach:
    """How far a world's spatial queries (``World.queries``) reach, metres. A host states these to its clients (the
    server's ``NEAREST_REACH_M`` and ``CLEARANCE_REACH_M``), so it passes them in rather than saving them."""

    nearest_m: float = 2.5
    """The distance field's reach: the largest ``nearest`` range, and the most a sphere's radius + contact margin +
    clearance may add up to (``WorldQueries.max_distance_m``). Memory grows with it."""
    clearance_m: float = 0.25
    """Collisions report clearances up to this; beyond, +inf (``WorldQueries.max_clearance_m``)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nearest_m) and self.nearest_m > 0):
            raise InvalidInputError(f"QueryReach.nearest_m must be a finite number of metres > 0, got {self.nearest_m!r}")
        if not (math.isfinite(self.clearance_m) and self.clearance_m >= 0):
            raise InvalidInputError(
                f"QueryReach.clearance_m must be a finite number of metres >= 0, got {self.clearance_m!r}"
            )


@dataclass(frozen=True)
class Conditioning:
    """Memory's condition for a chunk of N views (``World.condition``).

    ``renders``: N woven renders (``RenderResult``: rgb uint8 (H, W, 3), depth float32 (H, W) metres, 0 where
    uncovered, covered mask), one per target pose, in pose order. ``references``: the retrieved anchors' source
    images, uint8 (H, W, 3), most relevant first (empty in ``global`` mode). ``anchor_ids``: the retrieved anchors'
    ids, in the same order. ``retrieve_s`` / ``render_weave_s``: seconds spent retrieving, and rendering and weaving
    (the ``World.step`` stages of those names); ``retrieve_s`` is 0 when the last condition was reused (a camera
    holding still, see ``World.condition``).
    """

    renders: list[RenderResult]
    references: list[np.ndarray]
    anchor_ids: list[int]
    retrieve_s: float
    render_weave_s: float


@dataclass(frozen=True)
class StepFrame:
    """One generated frame: ``rgb`` uint8 (H, W, 3); ``depth`` float32 (H, W) metres (0 unknown) as fused;
    ``coverage`` the fraction of pixels memory covered before generation; ``pose`` the pose actually used
    (camera-to-world); ``frame_id``; ``version`` the memory version after this frame was fused; ``condition`` the
    woven memory render the generator was given for this view; ``confidence`` float32 (H, W) in [0, 1], each
    pixel's fusion confidence (0: shown but not fused); ``labels`` the label / normal images the step asked for,
    rendered from memory at ``version`` (after this frame was fused), else ``None``."""

    rgb: np.ndarray
    depth: np.ndarray
    coverage: float
    pose: Pose
    frame_id: int
    version: int
    condition: RenderResult
    confidence: np.ndarray
    labels: LabelImages | None = None
    camera_index: int = 0
    """With a rig, the camera (index in ``Rig.cameras``) that made this frame; 0 without."""


@dataclass(frozen=True)
class StepResult:
    """The frames of a step in pose order (with a rig, pose-major: every camera of a body pose, in camera order), and
    seconds spent per stage (``STAGES``) plus ``total``."""

    frames: tuple[StepFrame, ...]
    timings_s: dict[str, float]


def check_dynamic_box_labels(
    boxes: Sequence[Region], box_labels: Sequence[tuple[int, int]] | None
) -> list[tuple[Region, int, int]]:
    """The labelled dynamic boxes as ``(region, semantic_class, instance_id)``, leaving out boxes without ids (0, 0);
    ``InvalidInputError`` when ``box_labels`` is not None and not one pair per box, or an id is out of range."""
    if box_labels is None:
        return []
    if len(box_labels) != len(boxes):
        raise InvalidInputError(f"{len(box_labels)} dynamic box labels for {len(boxes)} dynamic boxes; give one per box")
    labelled = []
    for i, (box, pair) in enumerate(zip(boxes, box_labels)):
        try:
            semantic_class, instance_id = check_ids(*pair)
        except InvalidInputError as error:
            raise InvalidInputError(f"dynamic box {i}: {error}") from error
        if semantic_class or instance_id:
            labelled.append((box, semantic_class, instance_id))
    return labelled


def label_dynamic_content(
    images: LabelImages, frame: RGBDFrame, box_labels: Sequence[tuple[Region, int, int]]
) -> LabelImages:
    """``images`` (rendered from memory at ``frame``'s view) with the frame's dynamic content labelled: each pixel
    whose depth point (``frame.depth`` > 0, back-projected at ``frame.pose``, world metres) lies inside a box takes
    that box's non-zero semantic class / instance id (boxes in order: a later one wins where they overlap; a 0 id
    leaves memory's). Normals stay memory's. Returns new images; ``images`` is not changed."""
    if images.semantic is None and images.instance is None:
        return images
    valid = frame.depth > 0
    points_world = frame.pose.cam_to_world(frame.intrinsics.backproject(frame.depth.astype(np.float64))[valid])
    semantic = None if images.semantic is None else images.semantic.copy()
    instance = None if images.instance is None else images.instance.copy()
    for box, semantic_class, instance_id in box_labels:
        inside = np.zeros_like(valid)
        inside[valid] = box.contains(points_world)
        if semantic is not None and semantic_class:
            semantic[inside] = semantic_class
        if instance is not None and instance_id:
            instance[inside] = instance_id
    return replace(images, semantic=semantic, instance=instance)


@dataclass(frozen=True)
class _ConditionMemo:
    """The last anchor condition ``World.condition`` made, and what it was made from. Its ``conditioning`` (a copy,
    kept only when the call before had the same ``key``: a camera holding still, so a moving one pays no copy) is
    reused, as copies, for a call with an equal ``key`` (modes, options, intrinsics, exact poses) while the anchor
    store's index is the same object (no anchor added, removed or re-sketched since) and each retrieved anchor is still
    the store's (an edit replaces the anchors it touches). Retrieval, rendering and weaving are functions of exactly
    these, so the reuse gives what recomputing would."""

    key: tuple
    index: AnchorIndex
    anchors: tuple[Anchor, ...]
    conditioning: Conditioning | None

    def reusable(self, key: tuple, store: AnchorStore) -> bool:
        return (self.conditioning is not None and key == self.key and store.index() is self.index
                and all(a.id in store and store[a.id] is a for a in self.anchors))


GENERATOR_STATE_FILE = "generator_state.npz"
"""What the world's generator keeps of it (``GeneratorState``), in a saved world's folder, when it keeps anything."""


def _read_generator_state(folder: Path, name: str | None, generator: Generator) -> GeneratorState:
    """The generator state a world saved in ``folder`` kept for generator ``name`` (None: none), read back by
    ``generator`` when it is that generator (another one starts empty)."""
    state = GeneratorState()
    if name is None or name != generator.name:
        return state
    path = folder / GENERATOR_STATE_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            state.values[name] = generator.state_from_arrays(dict(arrays))
    except (OSError, ValueError, KeyError) as error:
        raise StorageError(f"cannot read the generator state {path}: {error}") from error
    return state


class World:
    """A generative world with spatial memory.

    ``seed``: the starting frames (fused as ``Source.SEED``, frame ids 0..n-1). ``config``: see ``WorldConfig``.
    ``generator`` / ``depth_estimator``: instances to use instead of building them from the config (a server shares
    one generator between worlds). ``device``: where memory lives. ``query_reach``: how far ``queries`` reach.
    """

    _condition_memo: _ConditionMemo | None = None
    """The last anchor condition (``condition``): a camera that holds still gets it again without retrieving,
    rendering or weaving."""

    def __init__(
        self,
        seed: Seed,
        config: WorldConfig | None = None,
        *,
        generator: Generator | None = None,
        depth_estimator: DepthEstimator | None = None,
        device: torch.device | str = "cpu",
        query_reach: QueryReach = QueryReach(),
    ) -> None:
        self.config = config or WorldConfig()
        self.memory = SpatialMemory(self.config.memory, device=device)
        self.query_reach = query_reach
        self._queries: WorldQueries | None = None
        self.intrinsics: Intrinsics = seed.frames[0].intrinsics
        self.prompt = seed.prompt
        self.generator, self.depth_estimator = self._backends(generator, depth_estimator)
        self._generator_state = GeneratorState()
        self._leading: list[np.ndarray] = []
        self._next_frame_id = 0
        self.checkpoints = CheckpointStore()
        """This world's checkpoints (``checkpoint``, ``restore``, ``fork``); saved with it."""
        for frame in seed.frames:
            self.memory.integrate(frame, frame_id=self._next_frame_id, source=Source.SEED)
            self._remember(frame.rgb)
            self._next_frame_id += 1

    def _backends(
        self, generator: Generator | None, depth_estimator: DepthEstimator | None
    ) -> tuple[Generator, DepthEstimator | None]:
        generator = generator or create_generator(self.config.generator, **self.config.generator_options)
        if depth_estimator is None and self.config.depth_estimator:
            depth_estimator = create_depth_estimator(self.config.depth_estimator, **self.config.depth_estimator_options)
        if not generator.returns_depth and depth_estimator is None:
            raise PreconditionError(
                f"generator {generator.name!r} returns no depth: set WorldConfig.depth_estimator (e.g. 'depth-anything')"
            )
        return generator, depth_estimator

    def _remember(self, rgb: np.ndarray) -> None:
        self._leading = (self._leading + [rgb])[-self.config.leading_frames :] if self.config.leading_frames else []

    @property
    def version(self) -> int:
        """Memory version: bumped by every fused frame and every edit."""
        return self.memory.voxel_map.version

    @property
    def frame_count(self) -> int:
        """Frames fused so far, seed included (the next frame id)."""
        return self._next_frame_id

    def __repr__(self) -> str:
        return (
            f"World({self.frame_count} frames, version {self.version}, generator={self.generator.name!r}, "
            f"{self.intrinsics.width}x{self.intrinsics.height}, {len(self.memory.anchors)} anchors)"
        )

    # -------------------------------------------------------------------------------------------------- step

    @staticmethod
    def _check_pose_types(poses: Sequence[Pose]) -> None:
        for i, pose in enumerate(poses):
            if not isinstance(pose, Pose):
                raise InvalidInputError(f"pose {i} is a {type(pose).__name__}, not a Pose")

    def _check_step(self, poses: Sequence[Pose], intrinsics: Intrinsics) -> None:
        """Check the poses of a single camera as a step does (``render``, label images)."""
        self._check_rig_step(poses, Rig.single(intrinsics), None)

    def _check_rig_step(
        self,
        poses: Sequence[Pose],
        rig: Rig,
        dynamic_masks: Sequence[Sequence[np.ndarray | None] | None] | None,
    ) -> list[list[np.ndarray | None]]:
        """Check a step of body ``poses`` seen by ``rig``'s cameras up front (all-or-nothing: nothing is fused before
        a bad input is found); returns the dynamic masks as ``[pose][camera]`` (None: no mask)."""
        if len(poses) == 0:
            raise InvalidInputError("a step needs at least one pose")
        if len(poses) > self.config.max_poses_per_step:
            raise LimitExceededError(f"{len(poses)} poses in one step; the limit is {self.config.max_poses_per_step}")
        self._check_pose_types(poses)
        if not isinstance(rig, Rig):
            raise InvalidInputError(f"rig is a {type(rig).__name__}, not a Rig")
        voxel_size_m = self.memory.voxel_map.voxel_size_m
        for i, pose in enumerate(poses):  # a far camera is refused before any frame is fused
            for c, camera_pose in enumerate(rig.camera_poses(pose)):
                where = f"poses[{i}]" if len(rig) == 1 else f"poses[{i}] rig camera {c}"
                check_extent(camera_pose.position, voxel_size_m, f"{where} position")
        for camera in rig.cameras:
            self.generator.check_size(camera.intrinsics)
        if dynamic_masks is None:
            return [[None] * len(rig) for _ in poses]
        if len(dynamic_masks) != len(poses):
            raise InvalidInputError(f"{len(dynamic_masks)} dynamic masks for {len(poses)} poses")
        masks = []
        for i, per_camera in enumerate(dynamic_masks):
            per_camera = [None] * len(rig) if per_camera is None else list(per_camera)
            if len(per_camera) != len(rig):
                raise InvalidInputError(f"pose {i} has {len(per_camera)} dynamic masks for a rig of {len(rig)} cameras")
            masks.append([
                None if m is None else check_mask(
                    m, camera.intrinsics.shape, f"dynamic mask {i}" + ("" if len(rig) == 1 else f" rig camera {c}")
                )
                for c, (m, camera) in enumerate(zip(per_camera, rig.cameras))
            ])
        return masks

    def _leading_for(self, own: list[np.ndarray], cameras: int) -> tuple[np.ndarray, ...]:
        """The leading frames of one camera's chunk. A single camera continues the world's last frames (across steps);
        each camera of a rig of several, its own frames from this step's earlier chunks (another camera's frame would
        be a cut in its video), so a rig step's first chunk has none."""
        if cameras == 1:
            return tuple(self._leading)
        keep = self.config.leading_frames
        return tuple(own[max(0, len(own) - keep):]) if keep else ()

    def condition(
        self,
        poses: Sequence[Pose],
        intrinsics: Intrinsics | None = None,
        *,
        mode: RetrievalMode | None = None,
        k: int | None = None,
        weave: WeaveOptions | None = None,
    ) -> Conditioning:
        """Memory's condition for one chunk of camera-to-world ``poses``: the anchors that cover the chunk, retrieved
        once for all of its poses, rendered and woven at every pose; in ``global`` mode the whole voxel map rendered at
        every pose, with no references. What ``step`` hands the generator and ``render`` returns.

        ``intrinsics``: defaults to the seed's. ``mode`` / ``k``: retrieval mode and most anchors (default: the memory
        config's). ``weave``: weaver options for this call (default: the memory config's, e.g. to compare weaver modes on
        one memory). A pose's render can depend on the other poses of the chunk (they share the anchors).

        A call equal to the last one (same modes, options, intrinsics and exactly the same poses) while the anchors it
        retrieved and the store's retrieval index are unchanged gets copies of the last condition, without retrieving,
        rendering or weaving again: the same result, for a camera that holds still (not in ``global`` mode, which reads
        the voxel map every step changes, nor ``random``, which draws anew).
        """
        intrinsics = intrinsics or self.intrinsics
        if len(poses) == 0:
            raise InvalidInputError("a condition needs at least one pose")
        self._check_pose_types(poses)
        mode, k = self.memory.retrieval_settings(mode, k)
        started = time.perf_counter()
        memo_key = None
        if mode not in ("global", "random"):  # global reads the voxel map (every step changes it); random, its rng
            memory = self.memory
            memo_key = (mode, k, weave or memory.config.weave, memory.config.retrieval_options, str(memory.device),
                        intrinsics, tuple(pose.matrix.tobytes() for pose in poses))
            memo = self._condition_memo
            if memo is not None and memo.reusable(memo_key, memory.anchors):
                kept = memo.conditioning
                renders = [r.copy() for r in kept.renders]
                return replace(kept, renders=renders, references=list(kept.references),
                               anchor_ids=list(kept.anchor_ids), retrieve_s=0.0,
                               render_weave_s=time.perf_counter() - started)
        if mode == "global":  # the voxel map stands in for the anchors
            anchors, render = [], self.memory.render_global
        else:
            anchors = self.memory.retrieve(poses, intrinsics, mode=mode, k=k)
            render = partial(self.memory.render_anchors, anchors, weave_options=weave)
        retrieved = time.perf_counter()
        renders = [render(pose, intrinsics) for pose in poses]
        conditioning = Conditioning(
            renders, [a.image for a in anchors], [a.id for a in anchors],
            retrieve_s=retrieved - started, render_weave_s=time.perf_counter() - retrieved,
        )
        if memo_key is not None:
            still = self._condition_memo is not None and self._condition_memo.key == memo_key
            kept = replace(conditioning, references=list(conditioning.references), renders=[
                r.copy() for r in renders
            ]) if still else None
            self._condition_memo = _ConditionMemo(memo_key, self.memory.anchors.index(), tuple(anchors), kept)
        return conditioning

    def _check_result(self, result: GenerationResult, frames: int, intrinsics: Intrinsics) -> None:
        name = self.generator.name
        if len(result.frames) != frames:
            raise PreconditionError(f"generator {name!r} returned {len(result.frames)} frames for a chunk of {frames}")
        if self.generator.returns_depth and (result.depths is None or len(result.depths) != frames):
            raise PreconditionError(f"generator {name!r} declares returns_depth but gave no depth for every frame")
        for i, rgb in enumerate(result.frames):
            if rgb.shape != (*intrinsics.shape, 3) or rgb.dtype != np.uint8:
                raise PreconditionError(f"generator {name!r} frame {i} is {rgb.dtype} {rgb.shape}, expected uint8 {(*intrinsics.shape, 3)}")
        confidences = result.confidences
        if not isinstance(confidences, (tuple, list)) or len(confidences) != frames:
            count = len(confidences) if isinstance(confidences, (tuple, list)) else type(confidences).__name__
            raise PreconditionError(f"generator {name!r} gave confidences {count} for a chunk of {frames} frames; "
                                    "GenerationResult.confidences needs one float32 (H, W) array per frame")
        for i, confidence in enumerate(confidences):
            problem = confidence_problem(confidence, intrinsics.shape)
            if problem is not None:
                raise PreconditionError(f"generator {name!r} confidence {i} {problem}")

    def _fusion_depth(self, result: GenerationResult, index: int, render: RenderResult, pose: Pose,
                      intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
        """Depth (float32 (H, W) metres, 0 unknown) and confidence (float32 (H, W) in [0, 1]) to fuse frame ``index``
        (at camera-to-world ``pose``) with: the generator's own, or the depth estimator's depth aligned to ``render``
        with the generator's confidence times that depth's agreement with memory (``depth_agreement``; 0 where memory
        has no depth); either way 0 on the pixels kept from memory whose line of sight crosses space no keyframe saw
        through (``line_of_sight``)."""
        if result.depths is not None:
            depth, confidence = result.depths[index], result.confidences[index]
        else:
            depth = align_depth(self.depth_estimator.estimate(result.frames[index]), render.depth, render.mask)
            confidence = result.confidences[index] * depth_agreement(depth, render.depth, render.mask)
        unseen = unseen_kept_pixels(self.queries, depth, confidence, render, pose, intrinsics)
        return depth, np.where(unseen, np.float32(0), confidence).astype(np.float32, copy=False)

    def step(
        self,
        poses: Sequence[Pose],
        *,
        intrinsics: Intrinsics | None = None,
        dynamic_masks: Sequence[np.ndarray | None] | None = None,
        dynamic_boxes: Sequence[Region] = (),
        dynamic_box_labels: Sequence[tuple[int, int]] | None = None,
        prompt: str | None = None,
        seed: int | None = None,
        labels: LabelRequest = LabelRequest(),
        rig: Rig | None = None,
    ) -> StepResult:
        """Generate one frame per camera-to-world pose, in order, and fuse each into memory; with a ``rig``, one frame
        per camera at each body pose, each body pose's frames fused as one memory update.

        ``intrinsics``: defaults to the seed's. ``dynamic_masks``: per pose, bool (H, W) True on moving content (or
        None), kept out of memory; with a rig, per pose None or one mask (or None) per camera. ``dynamic_boxes``: world
        regions kept out of memory for this step. ``dynamic_box_labels``: None, or one ``(semantic_class, instance_id)``
        per dynamic box (``labels.check_ids``; 0: none): in this step's semantic / instance images, each frame's pixels
        whose depth point (back-projected at the frame's pose) lies in a box show its ids over memory's
        (``label_dynamic_content``); memory never holds them. ``prompt``: overrides the world's prompt for this
        step. ``seed``: randomness for the generator (default: config seed + first frame id, so replays are
        identical). ``labels``:
        semantic / instance / normal images to render from memory after each frame is fused (``StepFrame.labels``;
        timed in ``render_weave``); none by default.

        ``rig`` (``proto.rig.Rig``): ``poses`` are then body poses ``T_world_body`` and camera ``c`` sees from
        ``T_world_body @ rig.cameras[c].mount`` through its own intrinsics (``intrinsics`` must be None). Frames come
        pose-major (every camera of pose 0, then of pose 1, ...; ``StepFrame.camera_index``), with frame ids in that
        order. Every camera's view of a chunk of body poses is conditioned on memory before the chunk, one generator
        call per camera (cameras may differ in size); the frames of one body pose are fused inside one
        ``VoxelMap.one_version`` block, so memory moves by one version per body pose and all its frames carry it.
        Without a rig a step is a one-camera rig at the body: one version per frame, as always.
        """
        step_started = time.perf_counter()
        if rig is not None and intrinsics is not None:
            raise InvalidInputError("with a rig, each camera has its own intrinsics: leave the step's intrinsics unset")
        if rig is None:
            rig = Rig.single(intrinsics or self.intrinsics)
            dynamic_masks = None if dynamic_masks is None else [[m] for m in dynamic_masks]
        masks = self._check_rig_step(poses, rig, dynamic_masks)
        box_labels = check_dynamic_box_labels(dynamic_boxes, dynamic_box_labels)
        timings = dict.fromkeys(STAGES, 0.0)
        step_seed = self.config.seed + self._next_frame_id if seed is None else seed
        own: list[list[np.ndarray]] = [[] for _ in rig.cameras]  # each camera's frames so far (``_leading_for``)
        frames: list[StepFrame] = []
        with holding_core():  # a kernel that splits its work (integrate) leaves this core to no one else
            for start in range(0, len(poses), self.generator.max_frames):
                bodies = list(poses[start : start + self.generator.max_frames])
                bodies += [bodies[-1]] * (self.generator.padded_chunk(len(bodies)) - len(bodies))
                chunks: list[tuple[list[Pose], list[RenderResult], GenerationResult]] = []
                for c, camera in enumerate(rig.cameras):
                    padded = [body.compose(camera.mount) for body in bodies]

                    # 1. Retrieve the anchors that cover the camera's chunk (none for the global map), and
                    # 2. render them at every pose and weave them into one condition per view.
                    conditioning = self.condition(padded, camera.intrinsics)
                    renders = conditioning.renders
                    timings["retrieve"] += conditioning.retrieve_s
                    timings["render_weave"] += conditioning.render_weave_s

                    # 3. Generate the camera's chunk.
                    t = time.perf_counter()
                    condition = Condition(
                        poses=tuple(padded), intrinsics=camera.intrinsics, renders=tuple(renders),
                        references=tuple(conditioning.references), leading_frames=self._leading_for(own[c], len(rig)),
                        prompt=self.prompt if prompt is None else prompt, seed=step_seed + start * len(rig) + c,
                        state=self._generator_state,
                    )
                    result = self.generator.generate(condition)
                    self._check_result(result, len(padded), camera.intrinsics)
                    timings["generate"] += time.perf_counter() - t
                    chunks.append((padded, renders, result))

                for i in range(min(self.generator.max_frames, len(poses) - start)):
                    fused: list[tuple[int, RGBDFrame, int, RenderResult]] = []
                    with self.memory.voxel_map.one_version():  # a body pose's frames: one memory update
                        for c, (padded, renders, result) in enumerate(chunks):
                            # 4. Depth and confidence for fusion.
                            t = time.perf_counter()
                            depth, confidence = self._fusion_depth(result, i, renders[i], padded[i],
                                                                   rig.cameras[c].intrinsics)
                            observed = observed_lines(renders[i], confidence)
                            timings["depth"] += time.perf_counter() - t

                            # 5. Fuse into memory, weighted by confidence (guesses and dynamic content excluded).
                            t = time.perf_counter()
                            frame_id = self._next_frame_id
                            frame = RGBDFrame(result.frames[i], depth, padded[i], rig.cameras[c].intrinsics, confidence)
                            self.memory.integrate(frame, frame_id=frame_id, exclude_mask=masks[start + i][c],
                                                  exclude_regions=dynamic_boxes, observed=observed)
                            self._remember(frame.rgb)
                            own[c].append(frame.rgb)
                            self._next_frame_id += 1
                            timings["integrate"] += time.perf_counter() - t
                            fused.append((c, frame, frame_id, renders[i]))
                    for c, frame, frame_id, render in fused:
                        t = time.perf_counter()
                        images = self._render_labels(frame.pose, frame.intrinsics, labels) if labels else None
                        if images is not None and box_labels:
                            images = label_dynamic_content(images, frame, box_labels)
                        timings["render_weave"] += time.perf_counter() - t
                        frames.append(StepFrame(frame.rgb, frame.depth, render.coverage, frame.pose, frame_id, self.version,
                                                render, frame.confidence, images, camera_index=c))
        timings["total"] = time.perf_counter() - step_started
        return StepResult(tuple(frames), timings)

    def render(self, poses: Sequence[Pose], *, intrinsics: Intrinsics | None = None) -> list[RenderResult]:
        """What memory holds, woven at each pose (``condition``'s renders): no generation, no update. The poses are
        one chunk: anchors are retrieved once for all of them (as in ``step``), so a pose's render can depend on the
        other poses given. Checks the poses as ``step`` does (count limit, the generator's image size)."""
        intrinsics = intrinsics or self.intrinsics
        self._check_step(poses, intrinsics)
        return self.condition(poses, intrinsics).renders

    def render_labels(
        self, poses: Sequence[Pose], request: LabelRequest, *, intrinsics: Intrinsics | None = None
    ) -> list[LabelImages]:
        """Semantic / instance / normal images of memory at each pose, as ``request`` asks (``bridge.memory.labels``:
        the voxel map splatted as in ``global`` mode, each pixel taking the labels of the voxel that won it). Checks
        the poses as ``render`` does."""
        intrinsics = intrinsics or self.intrinsics
        self._check_step(poses, intrinsics)
        return [self._render_labels(pose, intrinsics, request) for pose in poses]

    def _render_labels(self, pose: Pose, intrinsics: Intrinsics, request: LabelRequest) -> LabelImages:
        config = self.memory.config
        return render_labels(
            self.memory.voxel_map, pose, intrinsics, request, splat=config.weave.splat,
            footprint_scale=config.global_footprint_scale, footprint_falloff=config.weave.footprint_falloff,
        )

    # ------------------------------------------------------------------------------------------------- state

    @property
    def queries(self) -> WorldQueries:
        """Raycast, nearest surface, collision, occupancy and crop against this world's memory, within
        ``query_reach``, at the minimum-confidence levels of ``config.memory.confidence_levels`` (default level
        ``config.memory.default_min_confidence``); free space is what the current keyframe anchors saw through. Built by the first use (the
        distance field costs time and memory), then kept current: each query first applies the voxel map's changes
        since the last one (steps, edits), so the first query after a step pays for the blocks it touched. Not
        thread-safe: run queries, steps and edits of one world one at a time."""
        if self._queries is None:
            memory = self.memory
            self._queries = WorldQueries(
                memory.voxel_map, lambda: list(memory.anchors), max_distance_m=self.query_reach.nearest_m,
                max_clearance_m=self.query_reach.clearance_m, confidence_levels=memory.config.confidence_levels,
                default_min_confidence=memory.config.default_min_confidence,
            )
        return self._queries

    def changes_since(self, version: int) -> VoxelChanges:
        """The voxel map's net changes since memory version ``version`` (see ``VoxelMap.changes_since``).

        ``version`` 0 gives a snapshot of the whole map (``is_snapshot``, everything in ``added``), as does a version
        older than the change log keeps. Raises ``InvalidInputError`` for a version newer than the world's.
        """
        voxel_map = self.memory.voxel_map
        if version == 0:
            voxels = voxel_map.voxels()
            empty = np.empty(0, dtype=np.int64)
            nothing = VoxelSet(*(getattr(voxels, name)[:0] for name in VoxelSet.__dataclass_fields__))
            return VoxelChanges(0, int(voxel_map.version), True, voxels, nothing, empty)
        if version > voxel_map.version:
            raise InvalidInputError(
                f"since_version {version} is newer than the world's version {voxel_map.version}; "
                "send 0 for a snapshot"
            )
        return voxel_map.changes_since(version)

    # ------------------------------------------------------------------------------------------------- edits

    def remove(self, region: Region) -> int:
        """Remove everything in ``region`` from memory (voxel map and anchors); later frames no longer show it (the
        generator's state of this world is emptied: what it kept may be gone)."""
        self._generator_state = GeneratorState()
        return self.memory.remove(region)

    def recolor(self, region: Region, rgb: Sequence[int]) -> int:
        """Recolour everything in ``region``; later frames show the new colour (the generator's state of this world
        is emptied)."""
        self._generator_state = GeneratorState()
        return self.memory.recolor(region, rgb)

    def insert(self, points_m: np.ndarray, colors: np.ndarray, *, semantic_class: int = 0, instance_id: int = 0) -> int:
        """Insert world points (metres) with uint8 colours; later frames show them (the generator's state of this
        world is emptied). ``semantic_class`` / ``instance_id`` (non-zero): label the voxels they touch
        (``bridge.memory.labels``)."""
        self._generator_state = GeneratorState()
        return self.memory.insert(points_m, colors, semantic_class=semantic_class, instance_id=instance_id)

    def label(self, region: Region, semantic_class: int, instance_id: int = 0) -> int:
        """Tag everything in ``region`` with a semantic class and instance id (0: unlabel); returns voxels changed.
        Later label images show it."""
        return self.memory.voxel_map.label(region, semantic_class, instance_id)

    # ----------------------------------------------------------------------------------------------- storage

    def save(self, folder: str | Path) -> Path:
        """Save atomically (memory, config, prompt, leading frames, checkpoints); a crash mid-save keeps the previous
        save. Each checkpoint is saved as a world of its own under ``checkpoints/<id>/``."""
        with atomic_folder(folder) as tmp:
            self._write(tmp)
            (tmp / "checkpoints").mkdir()
            for checkpoint_id, snapshot in self.checkpoints.items():
                self._thawed(snapshot)._write(tmp / "checkpoints" / checkpoint_id, snapshot.created_unix_s)
        return Path(folder)

    def _write(self, tmp: Path, created_unix_s: float | None = None) -> None:
        """Write this world's state (not its checkpoints) into ``tmp``; ``created_unix_s``: a checkpoint's time."""
        tmp.mkdir(exist_ok=True)
        (tmp / "memory").mkdir()
        self.memory.write(tmp / "memory")
        if self._leading:
            save_array(tmp, "leading_frames", np.stack(self._leading))
        state = self._generator_state.values.get(self.generator.name)
        if state is not None:
            np.savez(tmp / GENERATOR_STATE_FILE, **self.generator.state_arrays(state))
        k = self.intrinsics
        write_manifest(tmp, {
            "kind": "world", "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
            "prompt": self.prompt, "next_frame_id": self._next_frame_id, "leading_frames": len(self._leading),
            "generator_state": self.generator.name if state is not None else None,
            "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy, "width": k.width, "height": k.height},
            "checkpoints": [c.checkpoint_id for c in self.checkpoints.list()] if created_unix_s is None else [],
            **({} if created_unix_s is None else {"created_unix_s": created_unix_s}),
        })

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        generator: Generator | None = None,
        depth_estimator: DepthEstimator | None = None,
        device: torch.device | str = "cpu",
        query_reach: QueryReach = QueryReach(),
    ) -> World:
        """Load a world saved with ``save``; it continues exactly where it stopped. ``query_reach`` is not saved: pass
        it again (see ``QueryReach``)."""
        folder = resolve_folder(folder)
        manifest = read_manifest(folder, "world", (FORMAT_VERSION,))
        world = cls.__new__(cls)
        world.config = WorldConfig.from_dict(manifest["config"])
        world.memory = SpatialMemory.read(folder / "memory", device=device)
        world.query_reach = query_reach
        world._queries = None
        world.intrinsics = Intrinsics(**manifest["intrinsics"])
        world.prompt = manifest["prompt"]
        world.generator, world.depth_estimator = world._backends(generator, depth_estimator)
        world._generator_state = _read_generator_state(folder, manifest.get("generator_state"), world.generator)
        world._next_frame_id = int(manifest["next_frame_id"])
        world._leading = list(load_array(folder, "leading_frames")) if manifest["leading_frames"] else []
        world.checkpoints = CheckpointStore()
        for checkpoint_id in manifest.get("checkpoints", []):
            sub = folder / "checkpoints" / checkpoint_id
            saved = cls.load(sub, generator=world.generator, depth_estimator=world.depth_estimator, device=device,
                             query_reach=query_reach)
            created = float(read_manifest(sub, "world", (FORMAT_VERSION,)).get("created_unix_s", 0.0))
            world.checkpoints.add(replace(freeze_world(saved), created_unix_s=created), checkpoint_id)
        return world

    # ------------------------------------------------------------------------------------------- checkpoints

    def snapshot(self) -> WorldSnapshot:
        """This world's state now, cheaply (``bridge.checkpoints``): the voxel map is copied once into a shared file
        after it changed, and pages are copied on write from then on."""
        return freeze_world(self)

    def checkpoint(self) -> CheckpointInfo:
        """Keep a snapshot of the world now in ``checkpoints``; returns its id and what it holds."""
        return self.checkpoints.add(self.snapshot())

    def restore(self, checkpoint_id: str) -> int:
        """Go back to checkpoint ``checkpoint_id`` (``NotFoundError`` if this world has none by that id): memory,
        config, prompt, leading frames and frame counter as they were. Versions only grow: the world continues at a
        new version (returned) whose content is the checkpoint's, so followers of the point cloud get a snapshot."""
        snapshot = self.checkpoints.get(checkpoint_id)
        thaw_world_into(self, snapshot, version=max(self.version, snapshot.version) + 1)
        return self.version

    def fork(self, checkpoint_id: str | None = None) -> World:
        """A new world that starts as a copy of this one now, or of its checkpoint ``checkpoint_id``, sharing this
        world's generator and depth estimator, with this world's checkpoints (so a branch can go back to a common
        ancestor). Cheap (pages are copied on write), and the two never see each other's steps, edits or new
        checkpoints."""
        world = self._thawed(self.snapshot() if checkpoint_id is None else self.checkpoints.get(checkpoint_id))
        world.checkpoints = self.checkpoints.fork()
        return world

    def _thawed(self, snapshot: WorldSnapshot) -> World:
        world = World.__new__(World)
        world.generator, world.depth_estimator, world.query_reach = self.generator, self.depth_estimator, self.query_reach
        world.checkpoints = CheckpointStore()
        thaw_world_into(world, snapshot)
        return world
