"""Where weaving K anchors gains and loses against one anchor on a real RGB-D recording, and how far a weaver that
chose the best anchor at every pixel could go (issue 18).

    python benchmarks/weave_headroom.py DATA --fuse 250:495 --eval 200:245 [--modes coverage iou] [--k 7]
                                        [--weave heuristic] [--blend weighted]

DATA is an RGB-D folder ``worldweave eval rgbd`` reads. The frames of ``--fuse`` seed one world; at each pose of
``--eval`` the world's view with K = 1 and with K anchors (``World.condition``, the weave of ``--weave``) is scored as
``eval rgbd`` scores it (PSNR in dB over covered pixels with depth, the mean over frames), and split:

* **on K=1's pixels**: the K-anchor view where the one-anchor view covers too: what weaving more anchors does there;
* **only K covers**: the pixels the other anchors add: how hard the coverage they bring is.

Each of the K retrieved anchors is also rendered alone, and two views are made of those renders:

* **rank order**: at every pixel, the colour of the most relevant anchor (retrieval's order) that covers it, with no
  depth test between anchors: what the weave's front-surface test and blend change, at the same coverage;
* **oracle**: at every pixel, the anchor colour nearest the target's. No weaver may look at the target, so the oracle
  is not a result: it bounds what any choice of one anchor per pixel could reach, and a weaver's distance to it is
  how much of that it finds. (A blend of anchors, or a colour gain, can go past it.)
"""

from __future__ import annotations

import argparse

import numpy as np

from worldweave.bridge.eval.metrics import coverage, mean_psnr, psnr
from worldweave.bridge.eval.rgbd import RGBDDataset, parse_range
from worldweave.bridge.memory.spatial_memory import MemoryConfig
from worldweave.bridge.memory.weave import WeaveOptions
from worldweave.bridge.world import Seed, World, WorldConfig

COLUMNS = ("K=1", "K", "K, on K=1's pixels", "K, only K covers", "rank order, K's pixels", "oracle, K's pixels",
           "oracle, K=1's pixels", "coverage K=1", "coverage K", "anchors")


def single_views(world: World, anchors, pose, intrinsics, target_rgb: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank order rgb, oracle rgb, covered) of the ``anchors`` (most relevant first), each rendered alone: at each
    pixel, the colour of the first anchor covering it, and the colour nearest ``target_rgb``."""
    renders = [world.memory.render_anchors([anchor], pose, intrinsics) for anchor in anchors]
    if not renders:
        return np.zeros_like(target_rgb), np.zeros_like(target_rgb), np.zeros(target_rgb.shape[:2], bool)
    rgbs, covered = np.stack([r.rgb for r in renders]), np.stack([r.mask for r in renders])
    errors = np.where(covered, ((rgbs.astype(np.int32) - target_rgb) ** 2).sum(-1), np.iinfo(np.int32).max)

    def pick(index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(rgbs, index[None, ..., None], 0)[0]

    return pick(covered.argmax(0)), pick(errors.argmin(0)), covered.any(0)


def headroom(world: World, dataset: RGBDDataset, eval_ids: list[int], mode: str, k: int,
             weave: WeaveOptions) -> dict[str, float]:
    """The table's row for one retrieval mode: each column's mean over ``eval_ids``."""
    scores: dict[str, list[float]] = {name: [] for name in COLUMNS}
    intrinsics = dataset.intrinsics
    for frame_id in eval_ids:
        target = dataset.frame(frame_id)
        valid = target.depth > 0
        one = world.condition([target.pose], intrinsics, mode=mode, k=1, weave=weave).renders[0]
        many = world.condition([target.pose], intrinsics, mode=mode, k=k, weave=weave).renders[0]
        anchors = world.memory.retrieve([target.pose], intrinsics, mode=mode, k=k)
        ranked, oracle, covered = single_views(world, anchors, target.pose, intrinsics, target.rgb)
        on_one, on_many = one.mask & valid, many.mask & valid
        scores["K=1"].append(psnr(one.rgb, target.rgb, on_one))
        scores["K"].append(psnr(many.rgb, target.rgb, on_many))
        scores["K, on K=1's pixels"].append(psnr(many.rgb, target.rgb, on_many & on_one))
        scores["K, only K covers"].append(psnr(many.rgb, target.rgb, on_many & ~on_one))
        scores["rank order, K's pixels"].append(psnr(ranked, target.rgb, on_many & covered))
        scores["oracle, K's pixels"].append(psnr(oracle, target.rgb, on_many & covered))
        scores["oracle, K=1's pixels"].append(psnr(oracle, target.rgb, on_one & covered))
        scores["coverage K=1"].append(coverage(one.mask, valid))
        scores["coverage K"].append(coverage(many.mask, valid))
        scores["anchors"].append(len(anchors))
    return {name: (float(np.nanmean(values)) if name.startswith(("coverage", "anchors")) else mean_psnr(values))
            for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="RGB-D folder (as `worldweave eval rgbd` reads)")
    parser.add_argument("--fuse", type=parse_range, required=True, metavar="A:B", help="frame ids that seed the world")
    parser.add_argument("--eval", type=parse_range, required=True, metavar="A:B", help="frame ids scored (unseen)")
    parser.add_argument("--modes", nargs="+", default=["coverage", "iou"], help="retrieval modes (rows)")
    parser.add_argument("--k", type=int, default=7, help="anchors woven (default %(default)s)")
    parser.add_argument("--weave", default="heuristic", choices=["heuristic", "learned"], help="weave mode")
    parser.add_argument("--blend", default="weighted", choices=["weighted", "best"],
                        help="heuristic blend: weighted mean of agreeing anchors, or the highest-weight one only")
    args = parser.parse_args()
    dataset = RGBDDataset.open(args.data)
    fuse_ids, eval_ids = dataset.select(*args.fuse), dataset.select(*args.eval)
    world = World(Seed([dataset.frame(i) for i in fuse_ids]), WorldConfig(memory=MemoryConfig()))
    weave = WeaveOptions(mode=args.weave, blend=args.blend)
    print(f"fuse {args.fuse[0]}:{args.fuse[1]} ({len(fuse_ids)} frames), eval {args.eval[0]}:{args.eval[1]} "
          f"({len(eval_ids)} frames), K = {args.k}, {args.weave} weave ({args.blend}); PSNR dB over covered "
          "pixels, mean over frames")
    print("| retrieval | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for mode in args.modes:
        row = headroom(world, dataset, eval_ids, mode, args.k, weave)
        print(f"| {mode} | " + " | ".join(f"{row[name]:.3f}" if name.startswith("coverage") else f"{row[name]:.2f}"
                                         for name in COLUMNS) + " |")


if __name__ == "__main__":
    main()
