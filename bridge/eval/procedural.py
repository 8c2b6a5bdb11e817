"""Ablations of spatial memory, as in the AnchorWeave and Spatia papers' tables, on worlds with exact ground truth.

For each case (a procedural scene and a trajectory through it) the world starts from the exact RGB-D frame at the
first pose only; every later frame is generated, chunk by chunk, by ``World.step``. Each method runs the same poses:

* ``no-memory``: each chunk conditioned only on the previous generated frame warped forward (a fresh world seeded
  with that one frame, so nothing older is remembered);
* ``global``: render the whole fused voxel map;
* ``anchors-coverage`` / ``anchors-iou`` / ``anchors-random``: K local anchors retrieved by greedy coverage
  (AnchorWeave), IoU top-K (Spatia) or at random, then woven;

each with and without injected pose and depth noise on the frames that are fused (the errors a real generator's
depth estimate and pose make). Frames are scored against the exact render (ground truth is used only to score,
never to fit anything): PSNR and SSIM over covered ∩ valid-depth pixels on every frame
and on revisits (``psnr_c``, ``ssim_c``), the same PSNR over all valid pixels (``psnr_all``, ``psnr_c_all``: holes
the generator filled count too), the PSNR of each revisit frame against the earlier frame it revisits warped into it
with ground-truth depth (``psnr_c_earlier``: does the place look the same as when it was first generated, as in
Spatia's closed-loop PSNR_C; a method that shows the same blank frame twice also scores high, so read it beside
``psnr_c_all``), coverage, warping error between consecutive generated frames, and ms per frame inside
``World.step``. Where each generated frame's pixels come from (the generator's confidence): the mean shares kept from
memory, generated with geometry and unknown (``kept``, ``generated``, ``unknown``). The world's voxel map at the end
of the trajectory (for ``no-memory``, the last one-frame world's) against the exact scene: ``phantom_rate``, the
share of voxels farther than 5 cm from the true surface, and ``surface_recall``, the share of the surface seen along
the trajectory with a confident voxel within 5 cm. How the generator continues the planes memory holds:
``plane_continuation``, of the pixels memory did not cover that view a plane
its render shows (within 0.75 m of what it shows), the share fused with depth within 5 cm of the truth, and
``beyond_truth``, the share of generated pixels whose depth lies more than 5 cm beyond the true surface (a guessed
surface behind something real); ``free_in_solids``, how many of the 500 points drawn
inside each of the scene's boxes (furniture, buildings) the final world answers FREE at its default confidence level
(free space through something real: should be 0). Every row runs with each embedded generator of ``--generators``
(default ``reproject`` and ``continue``), which is the ``generator`` column.

Prints the table; ``--json OUT`` writes the rows; PNG plots (PSNR along each trajectory, one line per method) go to
``--plots DIR``. The default run (three cases, the main methods, 320x240) is sized to finish within 10 minutes on
two CPU cores per generator (two by default; ``--generators reproject`` runs one); ``--full`` runs the whole
sweep (K = 1, 3, 7, every retrieval, four procedural trajectories, and the real trajectory files in
``--trajectories DIR`` when given).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from worldweave.bridge.eval import metrics
from worldweave.bridge.eval.scenes import Scene, make_scene
from worldweave.bridge.eval.trajectories import (
    Trajectory,
    fit_into_scene,
    load_kitti,
    load_realestate10k,
    load_tum,
    make_trajectory,
)
from worldweave.bridge.frames import RGBDFrame
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator
from worldweave.bridge.generators.registry import create_generator
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.geometry import Intrinsics, Pose

if TYPE_CHECKING:  # memory, rendering and the world (torch, numba) are imported where used: '--help' stays fast
    from worldweave.bridge.memory.spatial_memory import MemoryConfig
    from worldweave.bridge.world import World

FOV_X_DEG = 70.0
"""Horizontal field of view of the benchmark camera (square pixels, principal point at the image centre)."""
GENERATORS = ("reproject", "continue")
"""The embedded generators (no weights, CPU, deterministic) each row is run with by default: the benchmark measures
memory and what an embedded generator makes of it, not a model."""

NOISE_LEVELS = ("none", "pose+depth")
SOLID_POINTS_PER_BOX = 500
"""Points drawn inside each of the scene's boxes (``metrics.points_inside_solids``) to ask the final world's occupancy
(``free_in_solids``)."""

SCENE_MEMORY: dict[str, dict[str, float]] = {
    "room": {},
    "street": {"voxel_size_m": 0.05, "anchors.max_depth_m": 25.0},
}
"""Memory settings per scene (``MemoryConfig.with_overrides`` keys), the same for every method. Indoors the defaults
hold; the street's buildings stand 4 to 30 m away, beyond the default 8 m depth cap, so it gets a 25 m cap and 5 cm
voxels (Spatia's coarsest grid) to keep the map bounded."""


@dataclass(frozen=True)
class FusionNoise:
    """Errors injected into a generated frame before it is fused (the scored copy is untouched).

    Per frame, seeded by ``seed`` and the frame id:

    * **depth**: multiplied by a global scale ``1 + N(0, depth_scale)`` (a monocular estimate's residual scale
      after alignment), a smooth field ``1 ± depth_warp`` (a bilinear ramp between random corner values) and
      per-pixel ``1 + N(0, depth_pixel)``; unknown depth (0) stays unknown;
    * **pose**: the content is misregistered by a rigid ``delta`` (rotation about ``rotation_deg`` and translation
      about ``translation_m``, normal per axis, in the camera frame): the frame is re-rendered (one pixel per point,
      nearest wins) so that fusing it at its own pose puts every point where fusing the original at
      ``pose @ delta`` would. Pixels no point lands on get depth 0, so they are not fused.
    """

    rotation_deg: float = 1.0
    translation_m: float = 0.03
    depth_scale: float = 0.04
    depth_warp: float = 0.04
    depth_pixel: float = 0.01
    seed: int = 0

    def draw(self, frame_id: int, shape: tuple[int, int]) -> tuple[Pose, np.ndarray]:
        """This frame's misregistration ``delta`` (camera frame) and depth factor, float (H, W) for ``shape``."""
        rng = np.random.default_rng([self.seed, frame_id])
        axis_angle = np.radians(self.rotation_deg) * rng.normal(size=3)
        translation = self.translation_m * rng.normal(size=3)
        angle = float(np.linalg.norm(axis_angle))
        k = axis_angle / angle if angle > 0 else np.zeros(3)
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        delta = Pose(np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx, translation)
        h, w = shape
        corners = 1.0 + self.depth_warp * rng.uniform(-1, 1, size=(2, 2))
        ty, tx = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
        ramp = (corners[0, 0] * (1 - tx) + corners[0, 1] * tx) * (1 - ty) + (corners[1, 0] * (1 - tx) + corners[1, 1] * tx) * ty
        factor = (1.0 + self.depth_scale * rng.normal()) * ramp * (1.0 + self.depth_pixel * rng.normal(size=(h, w)))
        return delta, np.clip(factor, 0.5, 1.5)

    def __call__(self, frame: RGBDFrame, frame_id: int) -> RGBDFrame:
        """The frame as memory receives it: same pose and intrinsics, noisy depth, misregistered content. A frame's
        confidence travels with its content (re-rendered like a colour, in steps of 1/255); confidence-0 pixels give
        no content."""
        from worldweave.bridge.render import render_points

        delta, factor = self.draw(frame_id, frame.depth.shape)
        depth = np.where(frame.depth > 0, frame.depth * factor, 0.0).astype(np.float32)
        valid = depth > 0
        if frame.confidence is not None:
            valid &= frame.confidence > 0
        points_cam = frame.intrinsics.backproject(depth)[valid]
        moved_world = frame.pose.cam_to_world(delta.cam_to_world(points_cam))
        render = render_points(moved_world, frame.rgb[valid], frame.pose, frame.intrinsics)
        if frame.confidence is None:
            return RGBDFrame(render.rgb, render.depth, frame.pose, frame.intrinsics)
        grey = np.repeat(np.rint(frame.confidence[valid] * 255).astype(np.uint8)[:, None], 3, axis=1)
        confidence = render_points(moved_world, grey, frame.pose, frame.intrinsics).rgb[..., 0] / np.float32(255)
        return RGBDFrame(render.rgb, render.depth, frame.pose, frame.intrinsics, confidence.astype(np.float32))


class ScoringGenerator(Generator):
    """An embedded generator (``name``: frame by frame, returns depth), recording for scoring what the world does not
    return.

    For every generated frame, in order, it keeps the clean RGB, depth and confidence and memory's covered mask,
    depth and confidence (from the condition's render); with ``noise``, the frames it hands back to the world (which fuses them)
    carry ``FusionNoise``, while the recorded clean frames are the ones scored. Seconds spent adding noise are counted
    apart so they can be taken out of the timings. ``restart`` replaces the wrapped generator with a fresh one (a
    generator that remembers surfaces across views must not lend them to a world that has no memory).
    """

    name = "scoring"
    max_frames = 64
    returns_depth = True

    def __init__(self, name: str, noise: FusionNoise | None = None) -> None:
        self.generator_name = name
        self.inner = create_generator(name)
        inner = type(self.inner)
        if not (inner.returns_depth and inner.chunk_multiple == 1 and inner.chunk_offset == 0
                and inner.max_frames >= self.max_frames):
            raise InvalidInputError(f"the procedural benchmark scores embedded generators (frame by frame, with depth); "
                                    f"{name!r} is not one")
        self.noise = noise
        self.clean_rgb: list[np.ndarray] = []
        self.clean_depth: list[np.ndarray] = []
        self.confidences: list[np.ndarray] = []
        self.covered: list[np.ndarray] = []
        self.memory_depth: list[np.ndarray] = []
        self.memory_confidence: list[np.ndarray] = []
        self.noise_seconds = 0.0
        self._count = 0

    def restart(self) -> None:
        """Continue with a fresh instance of the wrapped generator (what it remembered is forgotten)."""
        self.inner = create_generator(self.generator_name)

    def generate(self, condition: Condition) -> GenerationResult:
        result = self.inner.generate(condition)
        self.clean_rgb.extend(result.frames)
        self.clean_depth.extend(result.depths)
        self.confidences.extend(result.confidences)
        self.covered.extend(render.mask for render in condition.renders)
        self.memory_depth.extend(render.depth for render in condition.renders)
        self.memory_confidence.extend(render.confidence for render in condition.renders)
        if self.noise is None:
            self._count += len(result.frames)
            return result
        began = time.perf_counter()
        frames, depths, confidences = [], [], []
        for rgb, depth, confidence, pose in zip(result.frames, result.depths, result.confidences, condition.poses):
            noisy = self.noise(RGBDFrame(rgb, depth, pose, condition.intrinsics, confidence), self._count)
            frames.append(noisy.rgb)
            depths.append(noisy.depth)
            confidences.append(noisy.confidence)
            self._count += 1
        self.noise_seconds += time.perf_counter() - began
        return GenerationResult(tuple(frames), tuple(depths), result.info, confidences=tuple(confidences))


@dataclass(frozen=True)
class Method:
    """One row's method: ``name`` as printed ("no-memory", "global", "anchors-coverage", ...), the memory retrieval
    it uses (``None`` for no memory), K anchors (``None`` where K does not apply) and the noise level."""

    name: str
    retrieval: str | None
    k: int | None
    noise: str = "none"

    @property
    def label(self) -> str:
        return self.name if self.k is None else f"{self.name} K={self.k}"


@dataclass(frozen=True)
class Case:
    """A scene and a trajectory through it (``frames`` poses; the first is the seed)."""

    scene: str
    trajectory: str
    frames: int
    source: Path | None = None
    """For a real trajectory: the file it was loaded from."""


def default_methods() -> list[Method]:
    """The main methods: no memory, global, anchors by coverage and at random (K = 3), and the noisy pair."""
    return [
        Method("no-memory", None, None),
        Method("global", "global", None),
        Method("anchors-coverage", "coverage", 3),
        Method("anchors-random", "random", 3),
        Method("global", "global", None, "pose+depth"),
        Method("anchors-coverage", "coverage", 3, "pose+depth"),
    ]


def full_methods() -> list[Method]:
    """Every method: no memory, global, anchors by coverage / IoU / random at K = 1, 3, 7; each without and with
    noise."""
    methods = []
    for noise in NOISE_LEVELS:
        methods.append(Method("no-memory", None, None, noise))
        methods.append(Method("global", "global", None, noise))
        for retrieval in ("coverage", "iou", "random"):
            for k in (1, 3, 7):
                methods.append(Method(f"anchors-{retrieval}", retrieval, k, noise))
    return methods


def default_cases(frames: int | None = None) -> list[Case]:
    return [
        Case("room", "loop", frames or 48),
        Case("room", "look-around", frames or 40),
        Case("street", "driving", frames or 56),
    ]


REAL_FILES = (
    ("room", "tum", "tum/freiburg1_xyz-groundtruth.txt"),
    ("room", "realestate10k", "realestate10k/0bf152ef84195293.txt"),
    ("street", "kitti", "kitti_odometry_gt/00.txt"),
)
"""Real trajectories of the full sweep, relative to ``--trajectories DIR`` (the layout of the shared samples)."""


def full_cases(frames: int | None, trajectory_dir: Path | None) -> list[Case]:
    cases = default_cases(frames) + [Case("room", "random-walk", frames or 72)]
    if trajectory_dir is not None:
        for scene, kind, relative in REAL_FILES:
            cases.append(Case(scene, kind, frames or 72, trajectory_dir / relative))
    return cases


def build_trajectory(case: Case, scene: Scene, seed: int) -> Trajectory:
    """The case's poses in ``scene``; real files are placed with ``fit_into_scene`` (rule stated there), with a
    stride that gives a few centimetres per frame for TUM (100 Hz mocap) and a 1.5 m path for RealEstate10K."""
    if case.source is None:
        return make_trajectory(case.trajectory, scene, case.frames, seed=seed)
    if case.trajectory == "tum":
        return fit_into_scene(load_tum(case.source), scene, stride=10, max_frames=case.frames)
    if case.trajectory == "kitti":
        return fit_into_scene(load_kitti(case.source), scene, max_frames=case.frames)
    if case.trajectory == "realestate10k":
        return fit_into_scene(load_realestate10k(case.source), scene, max_frames=case.frames, scale_to_length_m=1.5)
    raise InvalidInputError(f"no loader for real trajectory kind {case.trajectory!r}")


@dataclass
class FrameScores:
    """Per generated frame (trajectory index 1..N-1) scores of one method."""

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    psnr_all: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    warp_err: list[float] = field(default_factory=list)
    provenance: list[metrics.Provenance] = field(default_factory=list)
    map_scores: metrics.MapScores | None = None
    """The final voxel map against the exact scene."""
    free_in_solids: int = 0
    """Of ``SOLID_POINTS_PER_BOX`` points drawn inside each of the scene's boxes, how many the final world's
    occupancy query answers FREE at its default confidence level."""
    psnr_earlier: dict[int, float] = field(default_factory=dict)
    """Revisit frame index -> PSNR against the earlier frame it revisits, warped into it with ground-truth depth."""
    step_seconds: float = 0.0
    planes: list[metrics.PlaneCounts] = field(default_factory=list)
    """Per frame: how the generator continued the planes memory holds (``metrics.PlaneScorer``)."""


def _new_world(seed_frame: RGBDFrame, memory: MemoryConfig, generator: ScoringGenerator) -> World:
    """A world seeded with one frame, with ``memory``'s settings, generating through ``generator`` (restarted: the
    new world shares nothing with an earlier one)."""
    from worldweave.bridge.world import Seed, World, WorldConfig

    generator.restart()
    config = WorldConfig(memory=memory, generator=generator.generator_name)
    return World(Seed(frames=(seed_frame,)), config, generator=generator)


def run_method(
    method: Method,
    truth: Sequence[RGBDFrame],
    *,
    scene: Scene,
    surface_m: np.ndarray,
    chunk: int,
    seed: int,
    generator_name: str = GENERATORS[0],
    planes: metrics.PlaneScorer | None = None,
    memory_overrides: dict[str, float] | None = None,
    progress: tqdm | None = None,
) -> FrameScores:
    """Generate frames 1..N-1 at ``truth``'s poses with ``method`` and the embedded generator ``generator_name``,
    starting from ``truth[0]`` only, and score them.

    ``scene``: the scene ``truth`` was rendered in (``planes``: its ``metrics.PlaneScorer``, built when not given);
    ``surface_m``: (M, 3) world metres, the surface seen along the trajectory (``metrics.SeenSurface``). ``memory_overrides``: ``MemoryConfig.with_overrides`` keys for the scene
    (``SCENE_MEMORY``). Ground truth enters only the scores.
    """
    from worldweave.bridge.memory.spatial_memory import MemoryConfig

    intrinsics = truth[0].intrinsics
    poses = [frame.pose for frame in truth]
    memory = MemoryConfig(retrieval=method.retrieval or "global", k=method.k or 1, seed=seed)
    memory = memory.with_overrides(memory_overrides or {})
    noise = FusionNoise(seed=seed) if method.noise != "none" else None
    generator = ScoringGenerator(generator_name, noise)
    planes = planes or metrics.PlaneScorer(scene)
    scores = FrameScores()
    began = time.perf_counter()
    world = _new_world(truth[0], memory, generator)
    scores.step_seconds += time.perf_counter() - began
    previous = truth[0]
    for start in range(1, len(poses), chunk):
        began = time.perf_counter()
        if method.retrieval is None and start > 1:
            # No memory: a fresh world that knows only the previous generated frame (with noise, like any fused
            # frame; its guesses, confidence 0, are not fused). A frame with no depth of confidence > 0 cannot seed a
            # world; the last one-frame world is kept then.
            memory_frame = noise(previous, start - 1) if noise is not None else previous
            if ((memory_frame.depth > 0) & (memory_frame.confidence > 0)).any():
                world = _new_world(memory_frame, memory, generator)
        result = world.step(poses[start : start + chunk])
        scores.step_seconds += time.perf_counter() - began
        for index in range(start, start + len(result.frames)):
            target, before = truth[index], truth[index - 1]
            rgb = generator.clean_rgb[index - 1]
            valid = target.depth > 0
            scored = generator.covered[index - 1] & valid
            scores.psnr.append(metrics.psnr(rgb, target.rgb, scored))
            scores.ssim.append(metrics.ssim(rgb, target.rgb, scored))
            scores.psnr_all.append(metrics.psnr(rgb, target.rgb, valid))
            scores.coverage.append(metrics.coverage(generator.covered[index - 1], valid))
            kept = generator.covered[index - 1] & (generator.memory_depth[index - 1] > 0)
            depth, confidence = generator.clean_depth[index - 1], generator.confidences[index - 1]
            scores.provenance.append(metrics.provenance_shares(confidence, depth, kept))
            scores.planes.append(planes.score(target, kept, generator.memory_depth[index - 1],
                                              generator.memory_confidence[index - 1], depth, confidence))
            scores.warp_err.append(
                metrics.warping_error(rgb, previous.rgb, target.depth, target.pose, before.pose, intrinsics, before.depth)
            )
            previous = RGBDFrame(rgb, generator.clean_depth[index - 1], target.pose, intrinsics,
                                 generator.confidences[index - 1])
        if progress is not None:
            progress.update(len(result.frames))
    scores.step_seconds -= generator.noise_seconds
    voxels = world.memory.voxel_map.voxels()
    scores.map_scores = metrics.score_map(scene, voxels.positions_m, voxels.confidence, surface_m)
    _, scores.free_in_solids = metrics.free_inside_solids(scene, world.queries, SOLID_POINTS_PER_BOX, seed)
    frames = [truth[0].rgb, *generator.clean_rgb]
    for i, j in metrics.revisits(poses):
        warped, visible = metrics.warp_to_view(frames[j], truth[j].depth, poses[j], truth[i].depth, poses[i], intrinsics)
        earlier = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
        scores.psnr_earlier[i] = metrics.psnr(frames[i], earlier, visible)
    return scores


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def _mean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else math.nan


def summarise(method: Method, case: Case, trajectory: Trajectory, scores: FrameScores, generator_name: str) -> dict:
    """One JSON row. Revisit frames come from ``metrics.revisits`` on the trajectory's poses (index 0, the seed, is
    never scored)."""
    revisit_frames = sorted({i for i, _ in metrics.revisits(trajectory.poses)} - {0})
    at = [i - 1 for i in revisit_frames]
    frames = len(scores.psnr)
    return {
        "generator": generator_name,
        "method": method.name,
        "k": method.k,
        "noise": method.noise,
        "scene": case.scene,
        "trajectory": case.trajectory,
        "psnr": metrics.mean_psnr(scores.psnr),
        "ssim": _mean(scores.ssim),
        "psnr_c": metrics.mean_psnr([scores.psnr[i] for i in at]),
        "ssim_c": _mean([scores.ssim[i] for i in at]),
        "coverage": _mean(scores.coverage),
        "kept": _mean([p.kept for p in scores.provenance]),
        "generated": _mean([p.generated for p in scores.provenance]),
        "unknown": _mean([p.unknown for p in scores.provenance]),
        "phantom_rate": scores.map_scores.phantom_rate,
        "surface_recall": scores.map_scores.confident_surface_recall,
        "plane_continuation": _ratio(sum(c.continued for c in scores.planes), sum(c.target for c in scores.planes)),
        "beyond_truth": _ratio(sum(c.beyond for c in scores.planes), sum(c.generated for c in scores.planes)),
        "free_in_solids": scores.free_in_solids,
        "warp_err": _mean(scores.warp_err),
        "ms_per_frame": 1000.0 * scores.step_seconds / max(frames, 1),
        "psnr_all": metrics.mean_psnr(scores.psnr_all),
        "psnr_c_all": metrics.mean_psnr([scores.psnr_all[i] for i in at]),
        "psnr_c_earlier": metrics.mean_psnr(list(scores.psnr_earlier.values())),
        "frames": frames,
        "revisit_frames": len(revisit_frames),
    }


COLUMNS = (
    ("scene", "{}", 7), ("trajectory", "{}", 13), ("generator", "{}", 9), ("method", "{}", 17), ("k", "{}", 2), ("noise", "{}", 10),
    ("psnr", "{:.2f}", 6), ("ssim", "{:.3f}", 6), ("psnr_c", "{:.2f}", 6), ("ssim_c", "{:.3f}", 6),
    ("psnr_all", "{:.2f}", 8), ("psnr_c_all", "{:.2f}", 10), ("psnr_c_earlier", "{:.2f}", 14),
    ("coverage", "{:.3f}", 8), ("warp_err", "{:.2f}", 8),
    ("kept", "{:.3f}", 5), ("generated", "{:.3f}", 9), ("unknown", "{:.3f}", 7), ("phantom_rate", "{:.3f}", 12),
    ("surface_recall", "{:.3f}", 14), ("plane_continuation", "{:.3f}", 18), ("beyond_truth", "{:.3f}", 12),
    ("free_in_solids", "{}", 14),
    ("ms_per_frame", "{:.0f}", 12),
)


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width text table of the rows (nan and None print as ``-``)."""
    lines = ["  ".join(name.ljust(width) for name, _, width in COLUMNS)]
    for row in rows:
        cells = []
        for name, fmt, width in COLUMNS:
            value = row[name]
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(("-" if missing else fmt.format(value)).ljust(width))
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0)]


def plot_psnr(path: Path, title: str, panels: dict[str, dict[str, list[float]]], revisit_frames: Sequence[int]) -> None:
    """A PNG of per-frame PSNR (dB) against trajectory frame index: one panel per entry of ``panels`` (panel title ->
    method label -> per-frame values for frames 1..N-1), one line per method, broken where a value is nan; revisit
    frames shaded grey."""
    width, left, right, top, panel_height, gap = 900, 60, 220, 30, 260, 40
    height = top + len(panels) * (panel_height + gap)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), f"{title}   (grey: revisit frames)", fill="black")
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    frames = max((len(line) for series in panels.values() for line in series.values()), default=1)
    for n, label in enumerate(labels):
        colour = PALETTE[n % len(PALETTE)]
        y = top + 16 * n
        draw.line([width - right + 10, y + 6, width - right + 30, y + 6], fill=colour, width=3)
        draw.text((width - right + 36, y), label, fill="black")
    for p, (panel_title, series) in enumerate(panels.items()):
        y0 = top + p * (panel_height + gap) + 16
        y1 = y0 + panel_height - 16
        values = np.array([v for line in series.values() for v in line if math.isfinite(v)] or [10.0, 20.0])
        low, high = math.floor(values.min() / 5) * 5, math.ceil(values.max() / 5) * 5
        high = max(high, low + 5)

        def xy(frame: float, value: float) -> tuple[float, float]:
            return left + (width - left - right) * frame / frames, y1 - (y1 - y0) * (value - low) / (high - low)

        for frame in revisit_frames:
            draw.rectangle([xy(frame - 0.5, high)[0], y0, xy(frame + 0.5, high)[0], y1], fill=(228, 228, 228))
        for db in range(int(low), int(high) + 1, 5):
            y = xy(0, db)[1]
            draw.line([left, y, width - right, y], fill=(205, 205, 205))
            draw.text((8, y - 6), f"{db} dB", fill="black")
        for frame in range(0, frames + 1, max(frames // 8, 1)):
            draw.text((xy(frame, low)[0] - 6, y1 + 4), str(frame), fill="black")
        draw.rectangle([left, y0, width - right, y1], outline="black")
        draw.text((left, y0 - 14), panel_title, fill="black")
        for label, line in series.items():
            colour = PALETTE[labels.index(label) % len(PALETTE)]
            run: list[tuple[float, float]] = []
            for index, value in enumerate([*line, math.nan]):
                if math.isfinite(value):
                    run.append(xy(index + 1, value))
                    continue
                if len(run) > 1:
                    draw.line(run, fill=colour, width=2)
                elif run:
                    draw.ellipse([run[0][0] - 2, run[0][1] - 2, run[0][0] + 2, run[0][1] + 2], fill=colour)
                run = []
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true", help="run the whole sweep (every retrieval, K = 1, 3, 7, noise, "
                        "four procedural trajectories, and the real files in --trajectories)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the rows as a JSON list to OUT")
    parser.add_argument("--plots", type=Path, metavar="DIR", default=Path("eval-procedural"),
                        help="folder for the PSNR-along-trajectory PNGs (default: ./eval-procedural)")
    parser.add_argument("--size", default="320x240", metavar="WxH", help="image size in pixels (default 320x240)")
    parser.add_argument("--frames", type=int, metavar="N", help="poses per trajectory, seed included (default: per case)")
    parser.add_argument("--chunk", type=int, default=4, metavar="N", help="poses per World.step call (default 4)")
    parser.add_argument("--cases", metavar="LIST", help="only these comma-separated scene/trajectory cases, e.g. "
                        "room/loop,street/driving (default: every case of the run)")
    parser.add_argument("--methods", metavar="LIST", help="only these comma-separated method names, e.g. "
                        "no-memory,anchors-coverage (default: every method of the run)")
    parser.add_argument("--generators", default=",".join(GENERATORS), metavar="LIST",
                        help="comma-separated embedded generators each row runs with (default: "
                        f"{','.join(GENERATORS)})")
    parser.add_argument("--trajectories", type=Path, metavar="DIR", help="folder of real trajectory samples "
                        "(tum/, kitti_odometry_gt/, realestate10k/) for --full")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of scenes, random walks, random retrieval and noise")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InvalidInputError(f"--size must look like 320x240, got {text!r}") from None
    if width < 8 or height < 8:
        raise InvalidInputError(f"--size must be at least 8x8, got {text!r}")
    return width, height


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print the table; write JSON and plots. Returns the process exit code."""
    width, height = _parse_size(args.size)
    if args.chunk < 1:
        raise InvalidInputError(f"--chunk must be >= 1, got {args.chunk}")
    if args.frames is not None and args.frames < 2:
        raise InvalidInputError(f"--frames must be >= 2 (the seed and at least one generated frame), got {args.frames}")
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=FOV_X_DEG)
    cases = full_cases(args.frames, args.trajectories) if args.full else default_cases(args.frames)
    methods = full_methods() if args.full else default_methods()
    if args.cases:
        wanted = {c.strip() for c in args.cases.split(",")}
        unknown = wanted - {f"{c.scene}/{c.trajectory}" for c in cases}
        if unknown:
            raise InvalidInputError(f"unknown --cases {sorted(unknown)}; this run has "
                                    f"{[f'{c.scene}/{c.trajectory}' for c in cases]}")
        cases = [c for c in cases if f"{c.scene}/{c.trajectory}" in wanted]
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",")}
        unknown = wanted - {m.name for m in methods}
        if unknown:
            raise InvalidInputError(f"unknown --methods {sorted(unknown)}; choose from {sorted({m.name for m in methods})}")
        methods = [m for m in methods if m.name in wanted]
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    for name in generators:
        ScoringGenerator(name)  # an unknown or non-embedded generator is refused before any work

    began = time.perf_counter()
    scenes: dict[str, Scene] = {}
    prepared = []
    for case in cases:
        if case.scene not in scenes:
            scenes[case.scene] = make_scene(case.scene, args.seed)
        scene = scenes[case.scene]
        trajectory = build_trajectory(case, scene, args.seed)
        truth = [scene.render(pose, intrinsics) for pose in tqdm(trajectory.poses, desc=f"ground truth {case.scene}/"
                                                                  f"{case.trajectory}", leave=False)]
        seen = metrics.SeenSurface()
        for frame in truth:
            seen.add(frame)
        prepared.append((case, trajectory, truth, seen.points_m))
    total = sum(len(truth) - 1 for _, _, truth, _ in prepared) * len(methods) * len(generators)
    planes = {name: metrics.PlaneScorer(scene) for name, scene in scenes.items()}
    rows, curves = [], {}
    with tqdm(total=total, desc="generating", unit="frame") as progress:
        for case, trajectory, truth, surface_m in prepared:
            for method, generator_name in ((m, g) for m in methods for g in generators):
                progress.set_postfix_str(f"{case.scene}/{case.trajectory} {method.label} noise={method.noise} "
                                         f"{generator_name}")
                scores = run_method(method, truth, scene=scenes[case.scene], surface_m=surface_m, chunk=args.chunk,
                                    seed=args.seed, generator_name=generator_name, planes=planes[case.scene],
                                    memory_overrides=SCENE_MEMORY[case.scene], progress=progress)
                rows.append(summarise(method, case, trajectory, scores, generator_name))
                panels = curves.setdefault((case.scene, case.trajectory, method.noise), {
                    "PSNR over covered valid pixels (psnr)": {}, "PSNR over all valid pixels, holes filled (psnr_all)": {}})
                covered_panel, all_panel = panels.values()
                label = method.label if len(generators) == 1 else f"{method.label} {generator_name}"
                covered_panel[label] = scores.psnr
                all_panel[label] = scores.psnr_all
    print(format_table(rows))
    print(f"{len(rows)} rows, {total} generated frames at {width}x{height} in {time.perf_counter() - began:.0f} s")
    for (scene_name, trajectory_name, noise), panels in curves.items():
        trajectory = next(t for c, t, _, _ in prepared if (c.scene, c.trajectory) == (scene_name, trajectory_name))
        revisit_frames = sorted({i for i, _ in metrics.revisits(trajectory.poses)})
        plot_psnr(args.plots / f"psnr_{scene_name}_{trajectory_name}_noise-{noise.replace('+', '-')}.png",
                  f"{scene_name} / {trajectory_name} / noise {noise}", panels, revisit_frames)
    print(f"plots in {args.plots}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{k: _json_safe(v) for k, v in row.items()} for row in rows], indent=1))
        print(f"rows in {args.json}")
    return 0
