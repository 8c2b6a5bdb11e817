"""Training pixels for the learned weaver: anchors rendered at a target pose, with the true colour there.

A *view sample* is one target view: its memory retrieves up to K anchors for the pose, each is rendered there, and the
weaver's inputs (``weaver_net.pair_features``) are taken on the pixels two or more anchors render (where the network
runs), with the target's true colour at each. The target is only the label; nothing is fitted to it here.

Two sources, each built fresh (a memory of fused frames, then target poses it did not fuse):

* ``procedural_samples``: a procedural scene (``bridge/eval/scenes.py``) and a closed loop through it; two of every
  three lap frames are fused with the benchmark's pose and depth noise (``FusionNoise``) and a random exposure
  (colour gain ``exp(N(0, exposure_sigma))``); targets are the other lap frames and the loop's revisits of its start,
  rendered exactly at nominal exposure.
* ``rgbd_samples``: a folder of real RGB-D frames (``bridge/eval/rgbd.py``'s layout), split into fuse / target ids
  (``rgbd_splits``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from worldweave.bridge.eval.procedural import SCENE_MEMORY, FusionNoise
from worldweave.bridge.eval.rgbd import RGBDDataset
from worldweave.bridge.eval.scenes import make_scene
from worldweave.bridge.eval.trajectories import closed_loop
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.memory.anchors import Anchor
from worldweave.bridge.memory.spatial_memory import MemoryConfig, SpatialMemory
from worldweave.bridge.memory.voxel_map import Source
from worldweave.bridge.memory.weave import heuristic_weights
from worldweave.bridge.memory.weave_gains import overlap_log_gains
from worldweave.bridge.memory.weave_stack import AnchorFacts, WeaveStack, stack_renders
from worldweave.bridge.memory.weaver_net import ANCHOR_FEATURES, PAIR_FEATURES, anchor_features, pair_features
from worldweave.proto.geometry import Intrinsics, Pose

MAX_ANCHORS = 7
"""Anchors per view in a sample set (fewer are padded as absent)."""
RETRIEVALS = (("coverage", 7), ("iou", 7), ("coverage", 3))
"""(mode, K) used for successive target views, in turn."""
PROCEDURAL_SIZE = (320, 240)
"""Procedural views are rendered at this (width, height), 70 degrees across."""


@dataclass
class SampleSet:
    """N training pixels from V views. ``pairs`` (N, 7, PAIR_FEATURES) float16, ``present`` (N, 7) bool, ``prior``
    (N, 7) float32 heuristic log weights, ``colors`` (N, 7, 3) uint8 the anchors' raw colours, ``target`` (N, 3) uint8
    the true colour, ``view`` (N,) int64 the view of each pixel; per view ``anchors`` (V, 7, ANCHOR_FEATURES) float32
    and ``log_gains`` (V, 7) float32."""

    pairs: np.ndarray
    present: np.ndarray
    prior: np.ndarray
    colors: np.ndarray
    target: np.ndarray
    view: np.ndarray
    anchors: np.ndarray
    log_gains: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    @property
    def views(self) -> int:
        return len(self.anchors)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def concat(cls, parts: Sequence[SampleSet]) -> SampleSet:
        """One set of all ``parts`` (view indices renumbered)."""
        offsets = np.cumsum([0] + [p.views for p in parts])
        fields = {k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__ if k != "view"}
        view = np.concatenate([p.view + o for p, o in zip(parts, offsets)])
        return cls(view=view, **fields)

    @classmethod
    def empty(cls) -> SampleSet:
        k = MAX_ANCHORS
        return cls(np.zeros((0, k, PAIR_FEATURES), np.float16), np.zeros((0, k), bool), np.zeros((0, k), np.float32),
                   np.zeros((0, k, 3), np.uint8), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64),
                   np.zeros((0, k, ANCHOR_FEATURES), np.float32), np.zeros((0, k), np.float32))


def _pad(values: np.ndarray, axis: int) -> np.ndarray:
    width = [(0, 0)] * values.ndim
    width[axis] = (0, MAX_ANCHORS - values.shape[axis])
    return np.pad(values, width)


def view_sample(memory: SpatialMemory, anchors: Sequence[Anchor], pose: Pose, intrinsics: Intrinsics,
                target: RGBDFrame, rng: np.random.Generator, max_pixels: int) -> SampleSet:
    """The training pixels of one target view (at most ``max_pixels``, drawn at random from the pixels two or more of
    ``anchors`` render where the target has valid depth)."""
    options = memory.config.weave
    if len(anchors) < 2:
        return SampleSet.empty()
    renders = [a.render(pose, intrinsics, splat=options.splat, footprint_scale=options.footprint_scale,
                        footprint_falloff=options.footprint_falloff) for a in anchors]
    facts = AnchorFacts(np.array([a.pose.position for a in anchors]),
                        np.array([a.confidence for a in anchors], np.float32),
                        np.array([a.frame_id for a in anchors], np.int64),
                        np.array([a.source == Source.SEED for a in anchors]))
    stack = stack_renders(renders, facts.positions, pose, intrinsics, options.depth_tolerance_rel,
                          options.depth_tolerance_m, options.occluder_radius(intrinsics.width), facts.seeded)
    prior = heuristic_weights(stack, facts.confidences, options)
    log_gains, share = overlap_log_gains(stack)
    valid = target.depth.reshape(-1)[stack.pixels] > 0
    competing = (stack.mask.sum(axis=0) >= 2)
    sub: WeaveStack = stack.subset(competing)
    features = pair_features(sub, facts, prior[:, competing], log_gains, share)
    rows = np.flatnonzero(valid[competing])
    if len(rows) == 0:
        return SampleSet.empty()
    rows = np.sort(rng.choice(rows, size=min(max_pixels, len(rows)), replace=False))
    log_prior = np.log(np.maximum(prior[:, competing][:, rows], np.exp(-20.0))).T
    return SampleSet(
        pairs=_pad(features[rows], 1).astype(np.float16),
        present=_pad(sub.mask[:, rows].T, 1),
        prior=_pad(log_prior.astype(np.float32), 1),
        colors=_pad(np.clip(np.round(sub.rgb[:, rows]), 0, 255).astype(np.uint8).transpose(1, 0, 2), 1),
        target=target.rgb.reshape(-1, 3)[sub.pixels[rows]],
        view=np.zeros(len(rows), np.int64),
        anchors=_pad(anchor_features(facts, log_gains, share), 0)[None],
        log_gains=_pad(log_gains, 0)[None],
    )


def _targets_samples(memory: SpatialMemory, targets: Sequence[RGBDFrame], rng: np.random.Generator,
                     max_pixels: int) -> Iterator[SampleSet]:
    for i, target in enumerate(targets):
        mode, k = RETRIEVALS[i % len(RETRIEVALS)]
        anchors = memory.retrieve([target.pose], target.intrinsics, mode=mode, k=k)
        yield view_sample(memory, anchors, target.pose, target.intrinsics, target, rng, max_pixels)


def with_exposure(frame: RGBDFrame, gain: float) -> RGBDFrame:
    """``frame`` with its colours times ``gain`` (clipped to 0..255): an auto-exposure change."""
    rgb = np.clip(np.round(frame.rgb.astype(np.float32) * gain), 0, 255).astype(np.uint8)
    return RGBDFrame(rgb, frame.depth, frame.pose, frame.intrinsics, frame.confidence)


@dataclass(frozen=True)
class ProceduralCase:
    """A noisy memory of a procedural loop and the exact frames it should reproduce (see the module docstring)."""

    memory: SpatialMemory
    lap_targets: list[RGBDFrame]
    revisit_targets: list[RGBDFrame]


def procedural_case(scene_name: str, seed: int, *, frames: int = 48, exposure_sigma: float = 0.12,
                    noise: bool = True, size: tuple[int, int] = PROCEDURAL_SIZE) -> ProceduralCase:
    """Scene ``scene_name`` with ``seed``: fuse two of every three lap frames of a ``frames``-pose closed loop (with
    ``FusionNoise`` and an exposure gain each when ``noise``); targets: the other lap frames and the revisits.
    ``size``: (width, height) of the views, 70 degrees across."""
    scene = make_scene(scene_name, seed)
    width, height = size
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=70.0)
    trajectory = closed_loop(scene, frames)
    lap = int(round(frames * 0.75))
    fusion_noise = FusionNoise(seed=seed)
    rng = np.random.default_rng([seed, 7])
    memory = SpatialMemory(MemoryConfig().with_overrides(SCENE_MEMORY.get(scene_name, {})))
    lap_targets, revisits = [], []
    for i, pose in enumerate(trajectory.poses):
        frame = scene.render(pose, intrinsics)
        if i < lap and i % 3 != 1:
            if noise:
                gain = float(np.exp(np.clip(rng.normal(0.0, exposure_sigma), -0.35, 0.35)))
                frame = with_exposure(fusion_noise(frame, i), gain)
            if (frame.depth > 0).any():
                memory.integrate(frame, frame_id=i)
        elif i < lap:
            lap_targets.append(frame)
        else:
            revisits.append(frame)
    return ProceduralCase(memory, lap_targets, revisits)


def procedural_samples(scene_name: str, seed: int, *, max_pixels: int = 2048, exposure_sigma: float = 0.12,
                       frames: int = 48, size: tuple[int, int] = PROCEDURAL_SIZE) -> SampleSet:
    """Training pixels from one procedural case (all its targets; arguments as ``procedural_case``)."""
    case = procedural_case(scene_name, seed, exposure_sigma=exposure_sigma, frames=frames, size=size)
    rng = np.random.default_rng([seed, 11])
    parts = [s for s in _targets_samples(case.memory, case.lap_targets + case.revisit_targets, rng, max_pixels)
             if len(s)]
    return SampleSet.concat(parts) if parts else SampleSet.empty()


def rgbd_splits(ids: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """(fuse ids, target ids) pairs over one range of real frames: first half -> second half, second -> first, and
    every other frame -> the frames between."""
    ids = sorted(ids)
    half = len(ids) // 2
    return [(ids[:half], ids[half:]), (ids[half:], ids[:half]), (ids[0::2], ids[1::2])]


def rgbd_samples(dataset: RGBDDataset, ids: Sequence[int], *, max_pixels: int = 2048, seed: int = 0) -> Iterator[SampleSet]:
    """Training pixels from real frames ``ids`` of ``dataset``, one ``SampleSet`` per split of ``rgbd_splits``."""
    rng = np.random.default_rng([seed, 13])
    for fuse, targets in rgbd_splits(ids):
        memory = SpatialMemory(MemoryConfig())
        for frame_id in fuse:
            memory.integrate(dataset.frame(frame_id), frame_id=frame_id, source=Source.SEED)  # as eval rgbd seeds
        parts = [s for s in _targets_samples(memory, [dataset.frame(i) for i in targets], rng, max_pixels) if len(s)]
        yield SampleSet.concat(parts) if parts else SampleSet.empty()
