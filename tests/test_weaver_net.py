"""The learned weaver: a valid weighting, single-anchor pixels, exposure correction, shipped weights, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.memory.weave import WeaveOptions, weave
from worldweave.bridge.memory.weave_gains import overlap_log_gains
from worldweave.bridge.memory.weave_stack import stack_renders
from worldweave.bridge.memory.weaver_net import PAIR_FEATURES, WeaverNet, available, load_weaver
from worldweave.bridge.training.weaver_data import procedural_samples
from worldweave.bridge.training.weaver_loss import batch_tensors, weave_loss
from worldweave.proto.errors import NotFoundError
from worldweave.proto.geometry import Intrinsics, Pose

INTRINSICS = Intrinsics(40.0, 40.0, 15.5, 11.5, 32, 24)
TARGET = Pose.identity()
LEARNED = WeaveOptions(mode="learned")


def _plane(rgb: np.ndarray, depth_m: float, mask: np.ndarray | None = None) -> RenderResult:
    mask = np.ones(INTRINSICS.shape, bool) if mask is None else mask
    return RenderResult(np.where(mask[..., None], rgb, 0).astype(np.uint8),
                        np.where(mask, depth_m, 0.0).astype(np.float32), mask)


def _texture(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 180, size=(*INTRINSICS.shape, 3)).astype(np.float32)


def _inputs(seed: int, pixels: int = 5, anchors: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.rand(pixels, anchors, PAIR_FEATURES, generator=generator)
    present = torch.rand(pixels, anchors, generator=generator) > 0.3
    present[:, 0] = True
    prior = -5.0 * torch.rand(pixels, anchors, generator=generator)
    return pairs, present, prior


def test_the_output_is_a_valid_weighting_over_anchors_and_none() -> None:
    net = load_weaver("default")
    pairs, present, prior = _inputs(1, pixels=64, anchors=7)
    with torch.no_grad():
        weights = net(pairs, present, prior)
    assert weights.shape == (64, 8)
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(64), atol=1e-5)
    assert torch.all(weights[:, :7][~present] == 0)


def test_a_pixel_one_anchor_alone_renders_takes_that_anchors_colour() -> None:
    left = np.zeros(INTRINSICS.shape, bool)
    left[:, :16] = True
    texture = _texture()
    first = _plane(texture, 2.0, left)
    second = _plane(np.where(left[..., None], texture, [[50, 60, 70]]), 2.0)  # alone on the right half
    result = weave([first, second], np.zeros((2, 3)), [1.0, 1.0], TARGET, INTRINSICS, LEARNED, frame_ids=[3, 9])
    assert result.mask.all()
    assert np.all(result.rgb[:, 16:] == [50, 60, 70]) and np.allclose(result.depth[:, 16:], 2.0)
    assert np.abs(result.rgb[:, :16].astype(float) - texture[:, :16]).max() <= 1.0  # both agree on the left


def test_an_anchor_with_an_exposure_offset_is_corrected() -> None:
    truth = _texture(2)
    bright = _plane(np.clip(truth * 1.3, 0, 255), 2.0)  # the most relevant anchor, 30 % over-exposed
    others = [_plane(truth, 2.0) for _ in range(3)]
    renders = [bright, *others]
    positions = np.zeros((4, 3))
    stack = stack_renders(renders, positions, TARGET, INTRINSICS, 0.03, 0.02)
    log_gains, share = overlap_log_gains(stack)
    assert np.allclose(share, 1.0)
    assert log_gains[0] - log_gains[1] == pytest.approx(-np.log(1.3), abs=0.02)  # consistent after the gains
    heuristic = weave(renders, positions, [1.0] * 4, TARGET, INTRINSICS, frame_ids=[0, 1, 2, 3])
    learned = weave(renders, positions, [1.0] * 4, TARGET, INTRINSICS, LEARNED, frame_ids=[0, 1, 2, 3])
    error_heuristic = np.abs(heuristic.rgb.astype(float) - truth).mean()
    error_learned = np.abs(learned.rgb.astype(float) - truth).mean()
    assert error_learned < 0.5 * error_heuristic, (error_learned, error_heuristic)


REFERENCE = [
    [0.9816, 0.0, 0.0103, 0.0082, 0.0],
]
"""``test_the_shipped_weights_reproduce_their_reference_output``'s expected weights (rounded to 1e-4)."""


def test_the_shipped_weights_load_and_reproduce_their_reference_output() -> None:
    assert "default" in available()
    net = load_weaver("default")
    pairs, present, prior = _inputs(7, pixels=1, anchors=4)
    with torch.no_grad():
        weights = net(pairs, present, prior)
    assert np.allclose(weights.numpy(), REFERENCE, atol=2e-4), weights.numpy().round(4).tolist()
    with pytest.raises(NotFoundError, match="no weaver weights"):
        load_weaver("no-such-weights")


def test_a_few_training_steps_on_a_tiny_procedural_set_lower_the_loss() -> None:
    samples = procedural_samples("room", 3, frames=8, size=(48, 36), max_pixels=128)
    assert len(samples) > 150
    batch = batch_tensors(samples, np.arange(len(samples)))
    torch.manual_seed(0)
    net = WeaverNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a batch this small trains ~10x faster on one thread on a busy 2-core machine
    try:
        with torch.no_grad():
            before = float(weave_loss(net, batch, 0.05))
        for _ in range(40):
            optimizer.zero_grad()
            loss = weave_loss(net, batch, 0.05)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            after = float(weave_loss(net, batch, 0.05))
    finally:
        torch.set_num_threads(threads)
    assert after < 0.9 * before, (before, after)


def test_the_packed_forward_equals_the_dense_forward() -> None:
    net = load_weaver("default")
    pairs, present, prior = _inputs(3, pixels=300, anchors=7)
    with torch.no_grad():
        dense = net(pairs, present, prior)
        pixel, anchor = torch.nonzero(present, as_tuple=True)  # row-major: by pixel, then anchor
        weights, none = net.forward_packed(pairs[pixel, anchor], prior[pixel, anchor], present.sum(dim=1))
    assert torch.allclose(weights, dense[pixel, anchor], atol=1e-6)
    assert torch.allclose(none, dense[:, -1], atol=1e-6)
