"""Held-out check of a learned weaver on procedural scenes it was not trained on: heuristic vs learned, same memory.

For each case (``weaver_data.procedural_case``: a noisy, exposure-varying memory of a closed loop) and K, every
target view is rendered from the same retrieved anchors and woven by both modes, and scored against the exact frame:
PSNR over covered pixels with valid depth (``bridge/eval/metrics.py``) and coverage, separately on the loop's revisits
of its start and on the lap frames it did not fuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from worldweave.bridge.eval.metrics import coverage, mean_psnr, psnr
from worldweave.bridge.training.weaver_data import procedural_case


def heldout_rows(cases: Sequence[tuple[str, int]], weights: str, *, ks: Sequence[int] = (3, 7)) -> list[dict]:
    """One row per (case, K, target kind, weaver mode): ``case``, ``k``, ``targets`` ("revisit" | "lap"), ``weave``,
    ``psnr`` (dB), ``coverage``."""
    rows = []
    for scene_name, seed in cases:
        case = procedural_case(scene_name, seed)
        memory = case.memory
        modes = {"heuristic": replace(memory.config.weave, mode="heuristic"),
                 "learned": replace(memory.config.weave, mode="learned", weights=weights)}
        for k in ks:
            for kind, targets in (("revisit", case.revisit_targets), ("lap", case.lap_targets)):
                scores = {m: ([], []) for m in modes}
                for target in targets:
                    anchors = memory.retrieve([target.pose], target.intrinsics, mode="coverage", k=k)
                    valid = target.depth > 0
                    for mode, options in modes.items():
                        render = memory.render_anchors(anchors, target.pose, target.intrinsics, options)
                        scores[mode][0].append(psnr(render.rgb, target.rgb, render.mask & valid))
                        scores[mode][1].append(coverage(render.mask, valid))
                for mode, (values, covers) in scores.items():
                    rows.append({"case": f"{scene_name}-{seed}", "k": k, "targets": kind, "weave": mode,
                                 "psnr": mean_psnr(values), "coverage": sum(covers) / max(len(covers), 1)})
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    """The rows as a text table, heuristic and learned side by side."""
    lines = [f"{'case':<12} {'k':>2} {'targets':<8} {'heuristic dB':>12} {'learned dB':>10} {'gain dB':>8} "
             f"{'coverage h/l':>13}"]
    by_key = {(r["case"], r["k"], r["targets"], r["weave"]): r for r in rows}
    for case, k, kind in dict.fromkeys((r["case"], r["k"], r["targets"]) for r in rows):
        h, learned = by_key[(case, k, kind, "heuristic")], by_key[(case, k, kind, "learned")]
        lines.append(f"{case:<12} {k:>2} {kind:<8} {h['psnr']:>12.2f} {learned['psnr']:>10.2f} "
                     f"{learned['psnr'] - h['psnr']:>+8.2f} {h['coverage']:>6.3f}/{learned['coverage']:.3f}")
    return "\n".join(lines)
