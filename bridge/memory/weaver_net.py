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

import functools
import json
from dataclasses import dataclass
from pathlib import Path

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
class WeaverInputs:
    """Network inputs for P pixels with A anchors each.

    ``pairs`` (P, A, PAIR_FEATURES) float32; ``present`` (P, A) bool, the anchor rendered the pixel;
    ``prior`` (P, A) float32 the heuristic's log weight (``_LOG_FLOOR`` where it gives none); ``anchors``
    (A, ANCHOR_FEATURES) float32; ``log_gains`` (A,) float32 overlap-estimated log gains.
    """

    pairs: torch.Tensor
    present: torch.Tensor
    prior: torch.Tensor
    anchors: torch.Tensor
    log_gains: torch.Tensor


def anchor_features(facts: AnchorFacts, log_gains: np.ndarray, overlap_share: np.ndarray) -> np.ndarray:
    """(A, ANCHOR_FEATURES) float32: overlap log gain x 5, overlap share, rank / 6, recency, confidence."""
    count = len(facts)
    rank = np.arange(count, dtype=np.float32) / MAX_RANK
    return np.stack([5.0 * log_gains, overlap_share, rank, facts.recency(),
                     np.asarray(facts.confidences, np.float32)], axis=1).astype(np.float32)


def pair_features(stack: WeaveStack, facts: AnchorFacts, prior_weight: np.ndarray, log_gains: np.ndarray,
                  overlap_share: np.ndarray) -> np.ndarray:
    """(P, A, PAIR_FEATURES) float32 features of every (pixel, anchor) pair of ``stack``.

    ``prior_weight`` (A, P) is the heuristic weaver's weight (0 where it ignores the anchor). Order: agrees, heuristic
    log weight relative to the pixel's best / 10, gap behind the front / front x 10 (clipped at 0.5), depth relative
    to the median present depth x 10 (clipped at +-0.5), angle between rays (radians) x 3, log(anchor distance /
    target distance), rank / 6, share of the covered pixels the anchor renders, confidence, rendered point
    confidence, recency, gain-corrected RGB / 255 (3), its difference from the agreeing anchors' mean x 4 (3), log gain x 5,
    overlap share, present anchors / 7. Absent pairs are all 0.
    """
    count, pixels = stack.count, len(stack.pixels)
    present = stack.mask
    log_prior = np.log(np.maximum(prior_weight, np.exp(_LOG_FLOOR)))
    rel_prior = (log_prior - log_prior.max(axis=0, keepdims=True)) / 10.0
    depth = np.where(present, stack.depth, np.nan)
    median = np.nanmedian(depth, axis=0) if count > 1 else stack.front
    gap = np.clip((stack.depth - stack.front) / stack.front, 0.0, 0.5) * 10.0
    rel_median = np.clip((stack.depth - median) / median, -0.5, 0.5) * 10.0
    angle = np.arccos(stack.cos) * 3.0
    ratio = np.log(stack.dist_anchor / stack.dist_target)
    share = present.sum(axis=1) / max(pixels, 1)
    rgb = stack.rgb * np.exp(log_gains)[:, None, None] / 255.0
    agree = stack.agree.astype(np.float32)
    mean = (rgb * agree[..., None]).sum(axis=0) / np.maximum(agree.sum(axis=0), 1.0)[:, None]
    deviation = np.clip((rgb - mean[None]) * 4.0, -2.0, 2.0)
    per_anchor = np.stack([
        np.arange(count) / MAX_RANK, share, np.asarray(facts.confidences, np.float32), facts.recency(),
        5.0 * log_gains, overlap_share,
    ], axis=1).astype(np.float32)  # (A, 6)

    def spread(i: int) -> np.ndarray:
        return np.broadcast_to(per_anchor[:, i, None], (count, pixels))

    columns = [
        agree, rel_prior, gap, rel_median, angle, ratio, spread(0), spread(1), spread(2), stack.confidence, spread(3),
        rgb[..., 0], rgb[..., 1], rgb[..., 2], deviation[..., 0], deviation[..., 1], deviation[..., 2],
        spread(4), spread(5),
        np.broadcast_to(present.sum(axis=0)[None] / 7.0, (count, pixels)),
    ]
    features = np.stack(columns, axis=-1).astype(np.float32)  # (A, P, F)
    features[~present] = 0.0
    return np.ascontiguousarray(features.transpose(1, 0, 2))


def build_inputs(stack: WeaveStack, facts: AnchorFacts, prior_weight: np.ndarray, log_gains: np.ndarray,
                 overlap_share: np.ndarray) -> WeaverInputs:
    """``WeaverInputs`` for every pixel of ``stack`` (see ``pair_features``)."""
    log_prior = np.log(np.maximum(prior_weight, np.exp(_LOG_FLOOR))).T
    return WeaverInputs(
        torch.from_numpy(pair_features(stack, facts, prior_weight, log_gains, overlap_share)),
        torch.from_numpy(np.ascontiguousarray(stack.mask.T)),
        torch.from_numpy(np.ascontiguousarray(log_prior, dtype=np.float32)),
        torch.from_numpy(anchor_features(facts, log_gains, overlap_share)),
        torch.from_numpy(np.asarray(log_gains, np.float32)),
    )


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


def _run(net: WeaverNet, stack: WeaveStack, facts: AnchorFacts, prior: np.ndarray, log_gains: np.ndarray,
         share: np.ndarray) -> np.ndarray:
    inputs = build_inputs(stack, facts, prior, log_gains, share)
    with torch.inference_mode():
        return net(inputs.pairs, inputs.present, inputs.prior).numpy()


def learned_weights(stack: WeaveStack, facts: AnchorFacts, prior: np.ndarray, net: WeaverNet, *, stride: int = 1,
                    none_threshold: float = 0.5) -> LearnedWeights:
    """Weights, gains and coverage for ``stack`` from ``net``; ``prior`` (A, P) are the heuristic weights.

    The network runs only on pixels two or more anchors render ("competing"); elsewhere the one anchor present gets
    weight 1. With ``stride`` s > 1 it runs on the competing pixels of every s-th row and column, and each other
    competing pixel takes the weights of the sample at its block's top-left corner, kept per anchor only where that
    anchor renders the pixel within the depth tolerance of its depth at the sample (the same surface); a pixel left
    with no weight falls back to the heuristic ``prior``.
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
        sub = stack.subset(competing)
        out = _run(net, sub, facts, prior[:, competing], log_gains, share)
        weights[:, competing] = out[:, :count].T
        covered[competing] = out[:, count] <= none_threshold
        return LearnedWeights(weights, gains, covered)
    h, w = stack.shape
    u, v = stack.pixels % w, stack.pixels // w
    sampled = competing & (u % stride == 0) & (v % stride == 0)
    out = _run(net, stack.subset(sampled), facts, prior[:, sampled], log_gains, share)
    slot = np.full(h * w, -1, np.int64)
    slot[stack.pixels[sampled]] = np.arange(int(sampled.sum()))
    position = np.full(h * w, -1, np.int64)
    position[stack.pixels] = np.arange(len(stack.pixels))
    targets = np.flatnonzero(competing)
    corner = (v[targets] // stride * stride) * w + u[targets] // stride * stride
    j = slot[corner]
    has = j >= 0
    targets, j, corner_pos = targets[has], j[has], position[corner[has]]
    depth_here, depth_there = stack.depth[:, targets], stack.depth[:, corner_pos]
    tolerance = 0.03 * depth_there + 0.02
    same = stack.mask[:, targets] & stack.mask[:, corner_pos] & (np.abs(depth_here - depth_there) <= tolerance)
    carried = out[j, :count].T * same
    ok = carried.sum(axis=0) > 1e-6
    fallback = np.setdiff1d(np.flatnonzero(competing), targets[ok])
    weights[:, fallback] = prior[:, fallback]
    weights[:, targets[ok]] = carried[:, ok]
    covered[targets[ok]] = out[j[ok], count] <= none_threshold
    return LearnedWeights(weights, gains, covered)
