"""Score spatial memory on real RGB-D: fuse some frames, render others' poses from memory, compare with the real frames.

    worldweave eval rgbd DATASET --fuse A:B --eval C:D [--json OUT] [--chunk N] [--set KEY=VALUE ...]

DATASET is a folder in the layout of 7-Scenes as prepared for worldweave:

* ``color/<6-digit id>.jpg`` (or ``.png``): RGB images;
* ``depth/<id>.png``: uint16 depth, ``depth_scale_m_per_unit`` metres per unit (default 0.001, millimetres), 0 invalid;
* ``poses/<id>.txt``: 4x4 camera-to-world matrix, OpenCV camera axes, metres;
* ``intrinsics.json``: ``fx, fy, cx, cy, width, height`` in pixels (optionally ``depth_scale_m_per_unit``).

Frames with ids in ``[A, B]`` seed a ``World``: they are fused, in id order, into its memory (voxel map and
anchors); each needs some valid depth. Then for every frame with id in ``[C, D]`` the world's ``World.condition``
(the path a server's ``World.step`` and ``World.render`` run) renders the frame's pose, and the render is scored
against that real frame: PSNR and SSIM over covered pixels with valid depth, coverage of valid-depth pixels, and
the median absolute depth error (metres, pooled over the covered valid pixels of all evaluated frames), plus the
wall time per view. One row per memory mode: the global voxel map at 1 and 2 cm (a
world of that voxel size, seeded alike), and anchors with coverage / iou / recent / random retrieval at K = 1, 3, 7
(``--modes``, ``--ks``), each woven by every weaver mode of ``--weave``: ``heuristic`` (rows ``anchors-MODE``) and
``learned`` (rows ``anchors-MODE+learned``, the weaver network of ``--weights``), scored on the same memory in
one run. The evaluated frames' RGB and depth are used only to score; the fuse and eval ranges must not overlap.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from worldweave.bridge.cli_values import key_value
from worldweave.bridge.eval.metrics import coverage, mean_psnr, psnr, ssim
from worldweave.bridge.frames import RenderResult, RGBDFrame
from worldweave.proto.errors import InvalidInputError, NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

if TYPE_CHECKING:  # memory and the world (torch, numba) are imported where used: 'eval rgbd --help' stays fast
    from worldweave.bridge.memory.spatial_memory import MemoryConfig
    from worldweave.bridge.memory.weave import WeaveMode

GLOBAL_VOXEL_SIZES_M = (0.01, 0.02)
ANCHOR_MODES = ("coverage", "iou", "recent", "random")
ANCHOR_KS = (1, 3, 7)
WEAVE_MODES = ("heuristic", "learned")
ROW_FIELDS = ("memory", "k", "psnr", "ssim", "coverage", "depth_err_m", "ms_per_view")


@dataclass(frozen=True)
class RGBDDataset:
    """A folder of RGB-D frames with poses (layout in the module docstring). Frame ids are the file-name integers."""

    root: Path
    intrinsics: Intrinsics
    depth_scale_m: float
    ids: tuple[int, ...]
    """Ids that have a colour image, a depth image and a pose, ascending."""

    @classmethod
    def open(cls, root: str | Path) -> RGBDDataset:
        """Index ``root``; raises ``NotFoundError`` for a missing folder or file, ``InvalidInputError`` for bad
        intrinsics."""
        root = Path(root)
        if not root.is_dir():
            raise NotFoundError(f"no dataset folder {root} (expected the 7-Scenes-like layout: see --help)")
        meta_path = root / "intrinsics.json"
        if not meta_path.is_file():
            raise NotFoundError(f"no intrinsics.json in {root} (expected the 7-Scenes-like layout)")
        try:
            meta = json.loads(meta_path.read_text())
            intrinsics = Intrinsics(meta["fx"], meta["fy"], meta["cx"], meta["cy"], meta["width"], meta["height"])
        except (KeyError, ValueError) as error:
            raise InvalidInputError(f"{meta_path} must hold fx, fy, cx, cy, width, height: {error}") from error
        scale = float(meta.get("depth_scale_m_per_unit", 0.001))
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidInputError(f"{meta_path}: depth_scale_m_per_unit must be > 0, got {scale!r}")
        ids = []
        for path in sorted((root / "poses").glob("*.txt")):
            if path.stem.isdigit() and (root / "depth" / f"{path.stem}.png").is_file() and cls._color_path(root, path.stem):
                ids.append(int(path.stem))
        if not ids:
            raise NotFoundError(f"no frames in {root}: need poses/<id>.txt with depth/<id>.png and color/<id>.jpg|png")
        return cls(root, intrinsics, scale, tuple(sorted(ids)))

    @staticmethod
    def _color_path(root: Path, stem: str) -> Path | None:
        for suffix in (".jpg", ".png"):
            path = root / "color" / f"{stem}{suffix}"
            if path.is_file():
                return path
        return None

    def select(self, first: int, last: int) -> list[int]:
        """The ids in ``[first, last]``, ascending."""
        return [i for i in self.ids if first <= i <= last]

    def pose(self, frame_id: int) -> Pose:
        """Camera-to-world pose of frame ``frame_id``."""
        path = self.root / "poses" / f"{frame_id:06d}.txt"
        try:
            return Pose.from_matrix(np.loadtxt(path))
        except OSError as error:
            raise NotFoundError(f"no pose file {path}") from error

    def frame(self, frame_id: int) -> RGBDFrame:
        """Frame ``frame_id`` as an ``RGBDFrame`` (depth in metres, 0 invalid)."""
        stem = f"{frame_id:06d}"
        color_path = self._color_path(self.root, stem)
        if color_path is None:
            raise NotFoundError(f"no colour image for frame {frame_id} in {self.root / 'color'}")
        rgb = np.asarray(Image.open(color_path).convert("RGB"))
        raw = np.asarray(Image.open(self.root / "depth" / f"{stem}.png"))
        if raw.dtype not in (np.uint16, np.int32, np.uint32, np.int64):
            raise InvalidInputError(f"depth image of frame {frame_id} must be 16-bit integer, got {raw.dtype}")
        depth = raw.astype(np.float32) * np.float32(self.depth_scale_m)
        return RGBDFrame(rgb, depth, self.pose(frame_id), self.intrinsics)


def parse_range(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``, inclusive ids."""
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B with integer frame ids, got {text!r}") from None
    if first > last:
        raise argparse.ArgumentTypeError(f"range {text!r} is empty (A > B)")
    return first, last


@dataclass
class _Scores:
    psnr: list[float]
    ssim: list[float]
    coverage: list[float]
    depth_errors: list[np.ndarray]
    seconds: float = 0.0
    views: int = 0

    def add(self, render: RenderResult, target: RGBDFrame) -> None:
        valid = target.depth > 0
        scored = render.mask & valid
        self.psnr.append(psnr(render.rgb, target.rgb, scored))
        self.ssim.append(ssim(render.rgb, target.rgb, scored))
        self.coverage.append(coverage(render.mask, valid))
        self.depth_errors.append(np.abs(render.depth[scored] - target.depth[scored]))

    def row(self, memory: str, k: int) -> dict:
        errors = np.concatenate(self.depth_errors) if self.depth_errors else np.zeros(0)
        ssim_values = [v for v in self.ssim if not math.isnan(v)]
        cover = [v for v in self.coverage if not math.isnan(v)]
        return {
            "memory": memory,
            "k": k,
            "psnr": mean_psnr(self.psnr),
            "ssim": float(np.mean(ssim_values)) if ssim_values else math.nan,
            "coverage": float(np.mean(cover)) if cover else math.nan,
            "depth_err_m": float(np.median(errors)) if len(errors) else math.nan,
            "ms_per_view": 1000.0 * self.seconds / max(self.views, 1),
        }


def _chunks(ids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def evaluate(
    dataset: RGBDDataset,
    fuse_ids: list[int],
    eval_ids: list[int],
    *,
    config: MemoryConfig | None = None,
    chunk: int = 1,
    modes: tuple[str, ...] = ANCHOR_MODES,
    ks: tuple[int, ...] = ANCHOR_KS,
    global_voxel_sizes_m: tuple[float, ...] = GLOBAL_VOXEL_SIZES_M,
    weave_modes: tuple[WeaveMode, ...] = ("heuristic",),
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Fuse ``fuse_ids``, score every memory mode on ``eval_ids``; returns (rows, summary).

    Rows have the fields of ``ROW_FIELDS``; the summary counts anchors and voxels and times the fusion (loading the
    frames and seeding the worlds). ``chunk`` consecutive eval poses are retrieved together, as the world loop does
    for a chunk. Every render comes from ``World.condition``: anchor rows from the world of ``config``, each global
    row from the world of its voxel size (that one, or another seeded with the same frames). Anchor rows repeat for
    each of ``weave_modes`` (``config.weave`` with that mode; ``learned`` rows are named ``anchors-MODE+learned``).
    """
    overlap = sorted(set(fuse_ids) & set(eval_ids))
    if overlap:
        raise InvalidInputError(f"fuse and eval frames overlap at ids {overlap[:10]}: eval frames must stay unseen")
    if not fuse_ids or not eval_ids:
        raise InvalidInputError(f"need frames to fuse and to evaluate, got {len(fuse_ids)} and {len(eval_ids)}")
    if chunk < 1:
        raise InvalidInputError(f"chunk must be >= 1, got {chunk}")
    from worldweave.bridge.memory.spatial_memory import MemoryConfig
    from worldweave.bridge.world import Seed, World, WorldConfig

    config = config or MemoryConfig()
    rows_total = len(global_voxel_sizes_m) + len(modes) * len(ks) * len(weave_modes)
    bar = tqdm(total=len(fuse_ids) + rows_total * len(eval_ids), unit="view", disable=not progress,
               desc="loading")
    started = time.perf_counter()
    frames = []
    for frame_id in fuse_ids:
        frames.append(dataset.frame(frame_id))
        bar.update(1)
    bar.set_description("fusing")
    seed = Seed(frames)
    world = World(seed, WorldConfig(memory=config))
    worlds = {
        size: world if size == config.voxel_size_m else World(seed, WorldConfig(memory=replace(config, voxel_size_m=size)))
        for size in global_voxel_sizes_m
    }
    del frames, seed
    fuse_s = time.perf_counter() - started
    targets = {i: dataset.frame(i) for i in eval_ids}
    intrinsics = dataset.intrinsics

    rows = []
    for size in global_voxel_sizes_m:
        name = f"global-{round(size * 100)}cm"
        bar.set_description(name)
        scores = _Scores([], [], [], [])
        for frame_id in eval_ids:
            t0 = time.perf_counter()
            render = worlds[size].condition([targets[frame_id].pose], intrinsics, mode="global").renders[0]
            scores.seconds += time.perf_counter() - t0
            scores.views += 1
            scores.add(render, targets[frame_id])
            bar.update(1)
        rows.append(scores.row(name, 0))
    for mode, k, weave_mode in ((m, k, w) for m in modes for w in weave_modes for k in ks):
        name = f"anchors-{mode}" + ("" if weave_mode == "heuristic" else f"+{weave_mode}")
        weave = replace(config.weave, mode=weave_mode)
        bar.set_description(f"{name} k={k}")
        scores = _Scores([], [], [], [])
        for ids in _chunks(eval_ids, chunk):
            t0 = time.perf_counter()
            result = world.condition([targets[i].pose for i in ids], intrinsics, mode=mode, k=k, weave=weave)
            scores.seconds += time.perf_counter() - t0
            scores.views += len(ids)
            for frame_id, render in zip(ids, result.renders):
                scores.add(render, targets[frame_id])
            bar.update(len(ids))
        rows.append(scores.row(name, k))
    bar.close()
    summary = {
        "dataset": str(dataset.root),
        "fused_frames": len(fuse_ids),
        "eval_frames": len(eval_ids),
        "anchors": len(world.memory.anchors),
        "voxels": {f"{round(s * 100)}cm": len(worlds[s].memory.voxel_map) for s in global_voxel_sizes_m},
        "fuse_seconds": round(fuse_s, 2),
        "chunk": chunk,
        "config": config.to_dict(),
    }
    return rows, summary


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    header = f"{'memory':<26} {'k':>2} {'PSNR dB':>8} {'SSIM':>6} {'coverage':>8} {'depth err m':>11} {'ms/view':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['memory']:<26} {r['k']:>2} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['coverage']:>8.3f} "
            f"{r['depth_err_m']:>11.4f} {r['ms_per_view']:>8.1f}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="folder in the 7-Scenes-like layout (see above)")
    parser.add_argument("--fuse", type=parse_range, required=True, metavar="A:B", help="ids of frames to fuse (inclusive)")
    parser.add_argument("--eval", type=parse_range, required=True, metavar="C:D",
                        help="ids of frames to render and score (inclusive; must not overlap --fuse)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the rows as a JSON list here")
    parser.add_argument("--chunk", type=int, default=1, metavar="N", help="eval poses retrieved together (default: 1)")
    parser.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="override a memory setting, e.g. --set keyframes.min_coverage=0.8 (repeatable)")
    parser.add_argument("--modes", default=",".join(ANCHOR_MODES), metavar="LIST",
                        help=f"anchor retrieval modes to score, comma-separated (default: {','.join(ANCHOR_MODES)})")
    parser.add_argument("--ks", default=",".join(str(k) for k in ANCHOR_KS), metavar="LIST",
                        help="anchor counts K to score, comma-separated (default: 1,3,7)")
    parser.add_argument("--weave", default="heuristic", metavar="LIST",
                        help="weaver modes to score on the same memory, comma-separated from heuristic,learned "
                             "(default: heuristic)")
    parser.add_argument("--weights", default=None, metavar="NAME|FILE",
                        help="learned weaver weights: a shipped name or a .safetensors file from 'worldweave train "
                             "weaver' (default: the memory config's, 'default')")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    dataset = RGBDDataset.open(args.dataset)
    from worldweave.bridge.memory.spatial_memory import MemoryConfig  # after the dataset check: seconds to load

    overrides = dict(args.set)
    if args.weights is not None:
        overrides["weave.weights"] = args.weights
    config = MemoryConfig().with_overrides(overrides)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - set(ANCHOR_MODES)
    if unknown:
        raise InvalidInputError(f"unknown --modes {sorted(unknown)}; choose from {ANCHOR_MODES}")
    weave_modes = tuple(m for m in args.weave.split(",") if m)
    if not weave_modes or set(weave_modes) - set(WEAVE_MODES):
        raise InvalidInputError(f"--weave {args.weave!r}: choose from {WEAVE_MODES}, comma-separated")
    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k)
    except ValueError:
        raise InvalidInputError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise InvalidInputError(f"--ks must list positive integers, got {args.ks!r}")
    rows, summary = evaluate(
        dataset, dataset.select(*args.fuse), dataset.select(*args.eval), config=config, chunk=args.chunk,
        modes=modes, ks=ks, weave_modes=weave_modes, progress=not args.no_progress,
    )
    print(f"{summary['fused_frames']} frames fused -> {summary['anchors']} anchors, voxels {summary['voxels']}, "
          f"{summary['fuse_seconds']} s; {summary['eval_frames']} frames scored (chunk {summary['chunk']})")
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0
