"""The learned weaver (AnchorWeave's controller): per pixel, which retrieved anchors to trust, and one colour gain per
anchor.

Inputs are what the renderer and retrieval already have (``pair_features``): per pixel and anchor the depth test
(agrees with the front surface, relative gap to the front and to the median depth), viewing geometry (angle between
the anchor's and the target's rays, log ratio of their distances to the surface), the anchor's retrieval rank and
share of the view, its confidence, the rendered confidence of its points there, how recent it is among those retrieved, its
colour and that colour's difference from the agreeing anchors' mean, its overlap-estimated exposure gain
(``weave_gains``), and the heuristic weaver's weight. Per anchor (``anchor_features``): its overlap log gain and
overlap share, rank, recency and confidence.

``WeaverNet`` is a DeepSets-style network: a shared per-pair MLP, masked mean and max pooling over the anchors at
each pixel, a head that adds a correction to the heuristic's log weight of every anchor, and a head that scores a
"none" slot; the softmax over A anchors + none is the weighting (``none`` high: nothing here should be trusted, the
pixel is left a hole). A per-anchor head scales the overlap log gain by a factor in (0, 1.5), so an anchor that
overlaps nothing keeps gain 1. Its last layers start at zero, so an untrained net reproduces the heuristic weights.

Weights are safetensors files (no pickle) with the layer sizes in their metadata; ``load_weaver("default")`` loads the
ones shipped in this package, any other string is a path (``worldweave train weaver`` writes them).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from worldweave.bridge.memory.weave_gains import overlap_log_gains
from worldweave.bridge.memory.weave_stack import AnchorFacts, WeaveStack
from worldweave.proto.errors import InvalidInputError, NotFoundError

PAIR_FEATURES = 20
"""Features per (pixel, anchor) pair, in the order of ``pair_features``."""
ANCHOR_FEATURES = 5
"""Features per anchor, in the order of ``anchor_features``."""
MAX_RANK = 6
"""Retrieval ranks are scaled by this (K = 7 gives 0..1)."""
WEIGHTS_DIR = Path(__file__).parent / "weights"
"""Where the shipped weights live (package data)."""
FORMAT = "worldweave-weaver-1"
"""The ``format`` metadata of a weights file this code reads."""
_LOG_FLOOR = -20.0


@dataclass(frozen=True)
class PackedPairs:
    """The (pixel, anchor) pairs of R pixels where the anchor renders the pixel, sorted by pixel then anchor.

    ``features`` (N, PAIR_FEATURES) float32 (see ``pair_features``); ``prior`` (N,) float32 the heuristic's log
    weight (``_LOG_FLOOR`` where it gives none); ``row`` (N,) int64 the pair's pixel, 0..R-1 in the order of the rows
    given; ``anchor`` (N,) int64 its anchor (retrieval rank); ``starts`` (R + 1,) int64, pixel r's pairs are
    ``starts[r]:starts[r + 1]``.
    """

    features: np.ndarray
    prior: np.ndarray
    row: np.ndarray
    anchor: np.ndarray
    starts: np.ndarray


def anchor_features(facts: AnchorFacts, log_gains: np.ndarray, overlap_share: np.ndarray) -> np.ndarray:
    """(A, ANCHOR_FEATURES) float32: overlap log gain x 5, overlap share, rank / 6, recency, confidence."""
    count = len(facts)
    rank = np.arange(count, dtype=np.float32) / MAX_RANK
    return np.stack([5.0 * log_gains, overlap_share, rank, facts.recency(),
                     np.asarray(facts.confidences, np.float32)], axis=1).astype(np.float32)


def pack_pairs(stack: WeaveStack, facts: AnchorFacts, prior_weight: np.ndarray, log_gains: np.ndarray,
               overlap_share: np.ndarray, rows: np.ndarray | None = None) -> PackedPairs:
    """``PackedPairs`` of the present pairs of stack columns ``rows`` (int64 indices; ``None``: all), features as
    ``pair_features`` lists them. ``prior_weight`` (A, P) are the heuristic's weights on the whole stack. The share of
    the view an anchor renders counts over ``rows`` only (the pixels the network runs on)."""
    rows = np.arange(len(stack.pixels)) if rows is None else np.asarray(rows, np.int64)
    present = stack.mask[:, rows]
    per_pixel = present.sum(axis=0)
    starts = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(per_pixel, out=starts[1:])
    total = int(starts[-1])
    share = present.sum(axis=1) / max(len(rows), 1)
    per_anchor = np.stack([
        np.arange(stack.count) / MAX_RANK, share, np.asarray(facts.confidences, np.float32), facts.recency(),
        5.0 * log_gains, overlap_share,
    ], axis=1).astype(np.float32)  # (A, 6)
    packed = PackedPairs(np.empty((total, PAIR_FEATURES), np.float32), np.empty(total, np.float32),
                         np.empty(total, np.int64), np.empty(total, np.int64), starts)
    _pair_kernel(rows, starts, stack.mask, stack.agree, stack.depth, stack.front, stack.cos, stack.dist_anchor,
                 stack.dist_target, stack.confidence, stack.rgb, np.ascontiguousarray(prior_weight, np.float32),
                 np.exp(log_gains).astype(np.float32), per_anchor, packed.features, packed.prior, packed.row,
                 packed.anchor)
    return packed


@numba.njit(cache=True, error_model="numpy")
def _pair_kernel(rows, starts, mask, agree, depth, front, cos, dist_anchor, dist_target, confidence, rgb, prior,
                 gain, per_anchor, features, log_prior, row, anchor):
    """Fill the packed arrays, one pixel at a time (float32 as ``pair_features`` states; the heuristic's log weight
    and the present-anchor count in float64 before the float32 cast)."""
    count = mask.shape[0]
    floor = np.exp(_LOG_FLOOR)
    scratch = np.empty(count, np.float32)
    colour = np.empty((count, 3), np.float32)
    mean = np.empty(3, np.float32)
    log_weights = np.empty(count, np.float64)
    for r in range(len(rows)):
        j = rows[r]
        best = -np.inf
        present_count = 0
        agreeing = np.float32(0.0)
        mean[:] = 0.0
        for a in range(count):
            log_weights[a] = np.log(max(np.float64(prior[a, j]), floor))
            best = max(best, log_weights[a])
            if mask[a, j]:
                scratch[present_count] = depth[a, j]
                present_count += 1
            for c in range(3):
                colour[a, c] = rgb[a, j, c] * gain[a] / np.float32(255.0)
            if agree[a, j]:
                agreeing += np.float32(1.0)
                for c in range(3):
                    mean[c] += colour[a, c]
        for c in range(3):
            mean[c] = mean[c] / max(agreeing, np.float32(1.0))
        for i in range(1, present_count):  # insertion sort of the few present depths
            value = scratch[i]
            k = i - 1
            while k >= 0 and scratch[k] > value:
                scratch[k + 1] = scratch[k]
                k -= 1
            scratch[k + 1] = value
        half = present_count // 2
        median = scratch[half] if present_count % 2 else (scratch[half - 1] + scratch[half]) / np.float32(2.0)
        z_front = front[j]
        n = starts[r]
        for a in range(count):
            if not mask[a, j]:
                continue
            log_weight = log_weights[a]
            features[n, 0] = np.float32(1.0) if agree[a, j] else np.float32(0.0)
            features[n, 1] = np.float32((log_weight - best) / 10.0)
            gap = (depth[a, j] - z_front) / z_front
            features[n, 2] = min(max(gap, np.float32(0.0)), np.float32(0.5)) * np.float32(10.0)
            off_median = (depth[a, j] - median) / median
            features[n, 3] = min(max(off_median, np.float32(-0.5)), np.float32(0.5)) * np.float32(10.0)
            features[n, 4] = np.float32(np.arccos(cos[a, j])) * np.float32(3.0)
            features[n, 5] = np.float32(np.log(dist_anchor[a, j] / dist_target[j]))
            features[n, 6] = per_anchor[a, 0]
            features[n, 7] = per_anchor[a, 1]
            features[n, 8] = per_anchor[a, 2]
            features[n, 9] = confidence[a, j]
            features[n, 10] = per_anchor[a, 3]
            for c in range(3):
                features[n, 11 + c] = colour[a, c]
                deviation = (colour[a, c] - mean[c]) * np.float32(4.0)
                features[n, 14 + c] = min(max(deviation, np.float32(-2.0)), np.float32(2.0))
            features[n, 17] = per_anchor[a, 4]
            features[n, 18] = per_anchor[a, 5]
            features[n, 19] = np.float32(present_count / 7.0)
            log_prior[n] = np.float32(log_weight)
            row[n] = r
            anchor[n] = a
            n += 1


def pair_features(stack: WeaveStack, facts: AnchorFacts, prior_weight: np.ndarray, log_gains: np.ndarray,
                  overlap_share: np.ndarray) -> np.ndarray:
    """(P, A, PAIR_FEATURES) float32 features of every (pixel, anchor) pair of ``stack`` (the training batches' dense
    layout of ``pack_pairs``).

    ``prior_weight`` (A, P) is the heuristic weaver's weight (0 where it ignores the anchor). Order: agrees, heuristic
    log weight relative to the pixel's best / 10, gap behind the front / front x 10 (clipped at 0.5), depth relative
    to the median present depth x 10 (clipped at +-0.5), angle between rays (radians) x 3, log(anchor distance /
    target distance), rank / 6, share of the covered pixels the anchor renders, confidence, rendered point
    confidence, recency, gain-corrected RGB / 255 (3), its difference from the agreeing anchors' mean x 4 (3), log gain x 5,
    overlap share, present anchors / 7. Absent pairs are all 0.
    """
    packed = pack_pairs(stack, facts, prior_weight, log_gains, overlap_share)
    features = np.zeros((len(stack.pixels), stack.count, PAIR_FEATURES), np.float32)
    features[packed.row, packed.anchor] = packed.features
    return features


class WeaverNet(nn.Module):
    """Per-pixel anchor weights (softmax over A anchors + "none") and per-anchor colour gains; ``hidden`` units."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.pair = nn.Sequential(nn.Linear(PAIR_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.weight_head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.none_head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.gain_head = nn.Sequential(nn.Linear(ANCHOR_FEATURES, 8), nn.ReLU(), nn.Linear(8, 1))
        for head, bias in ((self.weight_head, 0.0), (self.none_head, -8.0), (self.gain_head, float(np.log(2.0)))):
            nn.init.zeros_(head[-1].weight)
            nn.init.constant_(head[-1].bias, bias)

    def forward(self, pairs: torch.Tensor, present: torch.Tensor, prior: torch.Tensor
                ) -> torch.Tensor:
        """(P, A + 1) weights from ``pairs`` (P, A, F), ``present`` (P, A) bool and ``prior`` (P, A) log weights; the
        last column is "none". Rows sum to 1; absent anchors get 0."""
        h = self.pair(pairs)
        keep = present.unsqueeze(-1).to(h.dtype)
        count = keep.sum(dim=1).clamp(min=1.0)
        mean = (h * keep).sum(dim=1) / count
        peak = torch.where(present.unsqueeze(-1), h, torch.zeros_like(h)).amax(dim=1)
        pooled = torch.cat([mean, peak], dim=-1)
        context = pooled.unsqueeze(1).expand(-1, h.shape[1], -1)
        delta = self.weight_head(torch.cat([h, context], dim=-1)).squeeze(-1)
        logits = torch.where(present, prior + delta, torch.full_like(delta, -torch.inf))
        none = self.none_head(pooled)
        return torch.softmax(torch.cat([logits, none], dim=-1), dim=-1)

    def forward_packed(self, features: torch.Tensor, prior: torch.Tensor, lengths: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on packed pairs: ``features`` (N, F) and ``prior`` (N,) log weights of R pixels' present pairs,
        pixel by pixel, ``lengths`` (R,) int64 pairs per pixel (>= 1). Returns (N,) each pair's weight and (R,) each
        pixel's "none" weight: ``forward``'s answer up to float rounding (the weight head's first layer is split into
        its part on the pair and its part on the pixel's pooled context, computed once per pixel)."""
        h = self.pair(features)
        mean = torch.segment_reduce(h, "sum", lengths=lengths) / lengths.unsqueeze(-1).to(h.dtype)
        peak = torch.segment_reduce(h, "max", lengths=lengths)
        pooled = torch.cat([mean, peak], dim=-1)
        first, last = self.weight_head[0], self.weight_head[2]
        context = nn.functional.linear(pooled, first.weight[:, self.hidden:], first.bias)
        row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        hidden = torch.relu(nn.functional.linear(h, first.weight[:, :self.hidden]) + context[row])
        logits = prior + last(hidden).squeeze(-1)
        none = self.none_head(pooled).squeeze(-1)
        top = torch.maximum(torch.segment_reduce(logits, "max", lengths=lengths), none)
        scores = torch.exp(logits - top[row])
        none_score = torch.exp(none - top)
        total = torch.segment_reduce(scores, "sum", lengths=lengths) + none_score
        return scores / total[row], none_score / total

    def gains(self, anchors: torch.Tensor, log_gains: torch.Tensor) -> torch.Tensor:
        """(A,) multiplicative colour gains: ``exp(s * log_gain)`` with a learned ``s`` in (0, 1.5) per anchor."""
        scale = 1.5 * torch.sigmoid(self.gain_head(anchors).squeeze(-1))
        return torch.exp(scale * log_gains)


def save_weaver(net: WeaverNet, path: Path, info: dict | None = None) -> None:
    """Write ``net``'s weights to ``path`` (safetensors) with its layer sizes and ``info`` (JSON) as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "hidden": str(net.hidden), "info": json.dumps(info or {})}
    save_file(tensors, str(path), metadata=metadata)


def weights_path(name: str) -> Path:
    """The file of weights ``name``: a file shipped in ``WEIGHTS_DIR`` (``"default"`` ->
    ``weaver_default.safetensors``), else ``name`` read as a path."""
    shipped = WEIGHTS_DIR / f"weaver_{name}.safetensors"
    if shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if not path.is_file():
        raise NotFoundError(f"no weaver weights {name!r}: neither a shipped name ({sorted(available())}) nor a file")
    return path


def available() -> list[str]:
    """Names of the weights shipped in the package."""
    return [p.stem.removeprefix("weaver_") for p in WEIGHTS_DIR.glob("weaver_*.safetensors")]


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> WeaverNet:
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise InvalidInputError(f"{path} is not a weaver weights file of format {FORMAT!r} (got {metadata.get('format')!r})")
    net = WeaverNet(hidden=int(metadata["hidden"]))
    try:
        net.load_state_dict(load_file(path))
    except RuntimeError as error:
        raise InvalidInputError(f"weaver weights {path} do not fit the network: {error}") from error
    net.eval()
    return net


def load_weaver(name: str) -> WeaverNet:
    """The weaver network of weights ``name`` (see ``weights_path``), in eval mode; cached per file version."""
    path = weights_path(name)
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


@dataclass(frozen=True)
class LearnedWeights:
    """The learned weaver's answer for a stack of A anchors on P pixels: ``weights`` (A, P) float32 (rows of a pixel
    need not sum to 1; the blend normalises), ``gains`` (A,) float32 colour gains, ``covered`` (P,) bool (False where
    "none" won)."""

    weights: np.ndarray
    gains: np.ndarray
    covered: np.ndarray


_CHUNK_PAIRS = 32768
"""The network weighs pairs in chunks of about this many (whole pixels), so its activations stay in cache."""


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside (the OpenMP setting is the calling thread's; other threads keep theirs):
    the weaver's chunks are too small to gain from more, and on a busy 2-core machine waiting for a second thread
    made each layer up to 10x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(net: WeaverNet, stack: WeaveStack, facts: AnchorFacts, prior: np.ndarray, log_gains: np.ndarray,
         share: np.ndarray, rows: np.ndarray) -> tuple[PackedPairs, np.ndarray, np.ndarray]:
    """The network on stack columns ``rows``: their ``PackedPairs``, (N,) float32 each pair's weight and (R,) float32
    each pixel's "none" weight (``WeaverNet.forward``'s answer, equal up to float rounding)."""
    packed = pack_pairs(stack, facts, prior, log_gains, share, rows)
    weights = np.empty(len(packed.row), np.float32)
    none = np.empty(len(rows), np.float32)
    per_pixel = np.diff(packed.starts)
    bounds = np.unique(np.append(np.searchsorted(packed.starts, np.arange(0, len(weights), _CHUNK_PAIRS),
                                                 side="right") - 1, len(rows)))
    with torch.inference_mode(), _one_thread():
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            n0, n1 = packed.starts[r0], packed.starts[r1]
            pair_weights, none_weights = net.forward_packed(
                torch.from_numpy(packed.features[n0:n1]), torch.from_numpy(packed.prior[n0:n1]),
                torch.from_numpy(per_pixel[r0:r1]))
            weights[n0:n1] = pair_weights.numpy()
            none[r0:r1] = none_weights.numpy()
    return packed, weights, none


def learned_weights(stack: WeaveStack, facts: AnchorFacts, prior: np.ndarray, net: WeaverNet, *, stride: int = 1,
                    none_threshold: float = 0.5) -> LearnedWeights:
    """Weights, gains and coverage for ``stack`` from ``net``; ``prior`` (A, P) are the heuristic weights.

    The network runs only on pixels two or more anchors render ("competing"), on the (pixel, anchor) pairs present
    there (``pack_pairs``); elsewhere the one anchor present gets weight 1. With ``stride`` s > 1 it runs on the
    competing pixels of every s-th row and column, and each other competing pixel takes the weights of the sample at
    its block's top-left corner, kept per anchor only where that anchor renders the pixel within the depth tolerance
    of its depth at the sample (the same surface); a pixel left with no weight falls back to the heuristic ``prior``.
    """
    log_gains, share = overlap_log_gains(stack)
    with torch.inference_mode():
        gains = net.gains(torch.from_numpy(anchor_features(facts, log_gains, share)),
                          torch.from_numpy(log_gains)).numpy()
    weights = stack.mask.astype(np.float32)
    covered = np.ones(len(stack.pixels), bool)
    competing = stack.mask.sum(axis=0) >= 2
    if not competing.any():
        return LearnedWeights(weights, gains, covered)
    count = stack.count
    if stride == 1:
        rows = np.flatnonzero(competing)
        packed, pair_weights, none = _run(net, stack, facts, prior, log_gains, share, rows)
        weights[packed.anchor, rows[packed.row]] = pair_weights
        covered[rows] = none <= none_threshold
        return LearnedWeights(weights, gains, covered)
    h, w = stack.shape
    u, v = stack.pixels % w, stack.pixels // w
    sampled = competing & (u % stride == 0) & (v % stride == 0)
    rows = np.flatnonzero(sampled)
    packed, pair_weights, none = _run(net, stack, facts, prior, log_gains, share, rows)
    out = np.zeros((len(rows), count + 1), np.float32)
    out[packed.row, packed.anchor] = pair_weights
    out[:, count] = none
    slot = np.full(h * w, -1, np.int64)
    slot[stack.pixels[sampled]] = np.arange(len(rows))
    position = np.full(h * w, -1, np.int64)
    position[stack.pixels] = np.arange(len(stack.pixels))
    _carry_kernel(np.flatnonzero(competing), stack.pixels, stride, w, slot, position, stack.mask, stack.depth, out,
                  prior, np.float32(none_threshold), weights, covered)
    return LearnedWeights(weights, gains, covered)


@numba.njit(cache=True, error_model="numpy")
def _carry_kernel(targets, pixels, stride, width, slot, position, mask, depth, out, prior, none_threshold, weights,
                  covered):
    """``learned_weights``' stride rule for stack columns ``targets``: carry the sample's weights (``out`` rows, the
    last column "none") per anchor where it shows the same surface, else fall back to ``prior``."""
    count = mask.shape[0]
    carried = np.empty(count, np.float32)
    for t in targets:
        p = pixels[t]
        corner = (p // width // stride * stride) * width + p % width // stride * stride
        j = slot[corner]
        total = np.float32(0.0)
        if j >= 0:
            c = position[corner]
            for a in range(count):
                there = depth[a, c]
                tolerance = np.float32(0.03) * there + np.float32(0.02)
                same = mask[a, t] and mask[a, c] and abs(depth[a, t] - there) <= tolerance
                carried[a] = out[j, a] if same else np.float32(0.0)
                total += carried[a]
        if j >= 0 and total > 1e-6:
            for a in range(count):
                weights[a, t] = carried[a]
            covered[t] = out[j, count] <= none_threshold
        else:
            for a in range(count):
                weights[a, t] = prior[a, t]
