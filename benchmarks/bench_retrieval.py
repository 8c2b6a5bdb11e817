"""Coverage retrieval for an 8-view chunk over 100 / 1,000 / 10,000 anchors, against brute force in the same run.

    python benchmarks/bench_retrieval.py [--counts 100,1000,10000] [--repeats 15]

Anchors are keyframes of a camera walking a long corridor (one every 10 cm of path, looking ahead and to the sides
at walls 1-3 m away), so the world grows with the number of anchors, as a world does when an agent explores. The
8-view chunk looks along the corridor from its middle. "Ours" is ``CoverageRetriever.select``: frustum pre-filter,
at most ``max_candidates`` candidates, projection of their sketches and greedy set cover. The baseline is the same
greedy cover with every anchor projected (no pre-filter, no cap). Both start from a built ``AnchorIndex`` (it is
kept up to date as anchors are added). A second scene puts every anchor in one 6 x 6 m room, where the pre-filter
passes most of them and the cap is what bounds the cost ("same pick" then tells whether the cap changed the
answer). Milliseconds, medians (and minima) over the repeats; the
machine's cores may be shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from worldweave.bridge.memory.anchors import Anchor, AnchorStore
from worldweave.bridge.memory.retrieval import (
    CoverageRetriever,
    RetrievalOptions,
    chunk_coverage,
    greedy_cover,
)
from worldweave.proto.geometry import Intrinsics, Pose

TARGET_INTRINSICS = Intrinsics(585.0, 585.0, 319.5, 239.5, 640, 480)
ANCHOR_INTRINSICS = Intrinsics(58.5, 58.5, 31.5, 23.5, 64, 48)
"""Anchors are kept small here: retrieval reads only each anchor's fixed-size sketch, never its full image."""


def _anchor(anchor_id: int, pose: Pose, rng: np.random.Generator) -> Anchor:
    """An anchor that sees a slanted wall 1-3 m ahead."""
    h, w = ANCHOR_INTRINSICS.shape
    u = np.arange(w)[None, :] / w
    depth = (rng.uniform(1.0, 3.0) + rng.uniform(-0.8, 0.8) * (u - 0.5) + 0 * np.arange(h)[:, None]).astype(np.float32)
    image = np.full((h, w, 3), anchor_id % 256, np.uint8)
    return Anchor(anchor_id, anchor_id, pose, ANCHOR_INTRINSICS, image, depth, np.zeros((0, 3), np.float32),
                  np.zeros((0, 3), np.uint8), np.zeros(0, np.float32))


def corridor_store(count: int, seed: int = 0) -> tuple[AnchorStore, list[Pose]]:
    """``count`` anchors along +x, 10 cm apart; the chunk: 8 views from the middle looking along the corridor."""
    rng = np.random.default_rng(seed)
    store = AnchorStore()
    for i in range(count):
        eye = np.array([0.1 * i, rng.uniform(-0.5, 0.5), 1.5])
        heading = rng.uniform(-1.2, 1.2) + (np.pi if rng.random() < 0.3 else 0.0)
        store.add(_anchor(i, Pose.look_at(eye, eye + [np.cos(heading), np.sin(heading), -0.1]), rng))
    middle = 0.05 * count
    chunk = [Pose.look_at([middle + 0.05 * j, 0.0, 1.5], [middle + 0.05 * j + 1.0, 0.1 * np.sin(j), 1.4])
             for j in range(8)]
    return store, chunk


def room_store(count: int, seed: int = 0) -> tuple[AnchorStore, list[Pose]]:
    """``count`` anchors anywhere in a 6 x 6 m room, looking every way; the chunk turns at the room's centre."""
    rng = np.random.default_rng(seed)
    store = AnchorStore()
    for i in range(count):
        eye = np.array([rng.uniform(-3, 3), rng.uniform(-3, 3), 1.5])
        heading = rng.uniform(-np.pi, np.pi)
        store.add(_anchor(i, Pose.look_at(eye, eye + [np.cos(heading), np.sin(heading), -0.1]), rng))
    chunk = [Pose.look_at([0, 0, 1.5], [np.cos(0.1 * j), np.sin(0.1 * j), 1.4]) for j in range(8)]
    return store, chunk


def brute_force(store: AnchorStore, chunk: list[Pose], k: int, options: RetrievalOptions) -> list[int]:
    """The same greedy cover with every anchor projected (no frustum pre-filter, no candidate cap): the baseline."""
    index = store.index()
    coverage = chunk_coverage(index, np.arange(len(index)), chunk, TARGET_INTRINSICS, options)
    return greedy_cover(coverage, k, options.min_gain)


def timed(run, repeats: int) -> tuple[float, float]:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), 1000 * float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000,10000")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--k", type=int, default=7)
    args = parser.parse_args()
    options = RetrievalOptions()
    retriever = CoverageRetriever(options)
    print(f"coverage retrieval, 8-view chunk at {TARGET_INTRINSICS.width}x{TARGET_INTRINSICS.height}, K={args.k}, "
          f"max_candidates={options.max_candidates}")
    print(f"{'scene':<9} {'anchors':>8} {'ours median':>11} {'min':>7} {'brute force':>11} {'min':>7} "
          f"{'speed-up':>8} {'same pick':>9}")
    for scene, make in (("corridor", corridor_store), ("room", room_store)):
        for count in (int(c) for c in args.counts.split(",")):
            store, chunk = make(count)
            index = store.index()
            ours = timed(lambda: retriever.select(index, chunk, TARGET_INTRINSICS, args.k), args.repeats)
            picked = retriever.select(index, chunk, TARGET_INTRINSICS, args.k)
            brute_repeats = max(1, args.repeats // (1 + count // 1000))
            brute = timed(lambda: brute_force(store, chunk, args.k, options), brute_repeats)
            same = picked == brute_force(store, chunk, args.k, options)
            print(f"{scene:<9} {count:>8} {ours[0]:>11.1f} {ours[1]:>7.1f} {brute[0]:>11.1f} {brute[1]:>7.1f} "
                  f"{brute[0] / ours[0]:>7.1f}x {str(same):>9}")


if __name__ == "__main__":
    main()
