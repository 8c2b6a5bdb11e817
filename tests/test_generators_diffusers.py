"""The diffusers backends (``wan-vace``, ``sd-inpaint``) and the Depth Anything estimator, on tiny random models.

Each model is built in code with random weights (no download) by ``worldweave.bridge.generators.tiny_models``,
written with ``save_pretrained`` to a temporary folder and loaded by the backend through the same path a user's
weights take. The tests check that the condition reaches the pipeline: frame counts, mask polarity, reference count
and size handling, observed where the pipeline hands its tensors to the denoiser (a forward pre-hook on the
transformer or UNet).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: tests never reach the network

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldweave.bridge.frames import RenderResult
from worldweave.bridge.generators.base import Condition
from worldweave.bridge.generators.depth import align_depth
from worldweave.bridge.generators.depth_anything import DepthAnythingEstimator
from worldweave.bridge.generators.registry import create_generator, generator_class
from worldweave.bridge.generators.tiny_models import (
    save_tiny_depth_anything,
    save_tiny_sd_inpaint,
    save_tiny_wan_vace,
)
from worldweave.bridge.generators.wan_vace import GENERATE, HOLE_GREY, KEEP
from worldweave.proto.errors import (
    InvalidFrameError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
)
from worldweave.proto.geometry import Intrinsics, Pose

STEPS = 2


# ---------------------------------------------------------------------------------------------------------------
# Tiny random models (worldweave.bridge.generators.tiny_models), saved like a user's weights.


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan_vace(tmp_path_factory.mktemp("wan-vace"))


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sd_inpaint(tmp_path_factory.mktemp("sd-inpaint"))


@pytest.fixture(scope="module")
def wan(wan_folder: Path):
    return create_generator("wan-vace", model=str(wan_folder), device="cpu", num_inference_steps=STEPS, max_references=3)


@pytest.fixture(scope="module")
def sd(sd_folder: Path):
    return create_generator("sd-inpaint", model=str(sd_folder), device="cpu", num_inference_steps=STEPS, batch_size=4)


# ---------------------------------------------------------------------------------------------------------------
# Conditions.

COVERED_RGB = (200, 40, 10)


def half_covered(intrinsics: Intrinsics, covered_fraction: float = 0.5) -> RenderResult:
    """A render whose left ``covered_fraction`` of columns is covered (a flat colour at 2 m), the rest holes."""
    h, w = intrinsics.shape
    mask = np.zeros((h, w), bool)
    mask[:, : int(round(w * covered_fraction))] = True
    rgb = np.where(mask[..., None], np.array(COVERED_RGB, np.uint8), np.uint8(0))
    return RenderResult(rgb, np.where(mask, 2.0, 0.0).astype(np.float32), mask)


def condition(
    frames: int,
    width: int = 40,
    height: int = 24,
    *,
    covered_fraction: float = 0.5,
    references: int = 0,
    leading: int = 0,
    seed: int = 0,
) -> Condition:
    intrinsics = Intrinsics.from_fov(width, height, fov_x_deg=60.0)
    poses = tuple(Pose.look_at([0.1 * i, 0.0, 1.0], [0.1 * i + 1.0, 0.0, 1.0]) for i in range(frames))
    return Condition(
        poses=poses,
        intrinsics=intrinsics,
        renders=tuple(half_covered(intrinsics, covered_fraction) for _ in range(frames)),
        references=tuple(np.full((30, 20, 3), 10 * (i + 1), np.uint8) for i in range(references)),
        leading_frames=tuple(np.full((height, width, 3), 50 + i, np.uint8) for i in range(leading)),
        prompt="a red house",
        seed=seed,
    )


class Capture:
    """Records the keyword arguments of a module's last forward call (a forward pre-hook, removed on exit)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.calls: list[dict] = []

    def __enter__(self) -> "Capture":
        self.handle = self.module.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls.append({"args": [a.detach().clone() for a in args if torch.is_tensor(a)],
                           **{k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}})


# ---------------------------------------------------------------------------------------------------------------
# Registry.


def test_registry_lists_backends_without_importing_diffusers():
    code = (
        "import sys\n"
        "from worldweave.bridge.generators import registry\n"
        "assert {'wan-vace', 'sd-inpaint'} <= set(registry.available()), registry.available()\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_declared_limits():
    wan_cls, sd_cls = generator_class("wan-vace"), generator_class("sd-inpaint")
    assert [n for n in range(1, 90) if wan_cls.valid_chunk(n)] == list(range(1, 82, 4))
    assert wan_cls.padded_chunk(2) == 5 and wan_cls.size_multiple == 16 and not wan_cls.returns_depth
    assert all(sd_cls.valid_chunk(n) for n in range(1, sd_cls.max_frames + 1)) and sd_cls.size_multiple == 8


# ---------------------------------------------------------------------------------------------------------------
# wan-vace.


def test_wan_prepare_maps_condition_to_video_mask_and_references(wan):
    cond = condition(5, references=4, leading=2)
    inputs = wan.prepare(cond)
    # 1 leading frame (the option) + 5 views = 6 -> 9 frames (4k+1), the last view held 3 times; 40x24 -> 48x32.
    assert (inputs.num_frames, inputs.leading_frames, inputs.held_frames) == (9, 1, 3)
    assert (inputs.width, inputs.height) == (48, 32)
    assert len(inputs.video) == len(inputs.mask) == 9
    video = np.stack([np.asarray(image) for image in inputs.video])
    mask = np.stack([np.asarray(image) for image in inputs.mask])
    assert video.shape == (9, 32, 48, 3) and mask.shape == (9, 32, 48)
    # The newest leading frame opens the video, kept.
    np.testing.assert_array_equal(video[0, :24, :40], cond.leading_frames[-1])
    assert (mask[0, :24, :40] == KEEP).all()
    # Views: covered pixels carry the render and are kept; holes are grey and generated.
    covered = cond.renders[0].mask
    for frame in range(1, 9):
        np.testing.assert_array_equal(video[frame, :24, :40][covered], cond.renders[0].rgb[covered])
        assert (video[frame, :24, :40][~covered] == HOLE_GREY).all()
        assert (mask[frame, :24, :40][covered] == KEEP).all() and (mask[frame, :24, :40][~covered] == GENERATE).all()
    # Size padding: grey and generated, on every frame.
    assert (video[:, 24:] == HOLE_GREY).all() and (video[:, :, 40:] == HOLE_GREY).all()
    assert (mask[:, 24:] == GENERATE).all() and (mask[:, :, 40:] == GENERATE).all()
    # References: the 3 most relevant of 4, in order, unchanged.
    assert [np.asarray(r)[0, 0, 0] for r in inputs.reference_images] == [10, 20, 30]
    assert inputs.prompt == "a red house"


def test_wan_guide_mode_generates_everywhere_but_keeps_leading_frames(wan_folder):
    wan_guide = create_generator("wan-vace", model=str(wan_folder), device="cpu", num_inference_steps=STEPS, covered="guide")
    inputs = wan_guide.prepare(condition(5, leading=1))
    mask = np.stack([np.asarray(image) for image in inputs.mask])
    assert (mask[0, :24, :40] == KEEP).all()
    assert (mask[1:] == GENERATE).all()


def test_wan_condition_reaches_the_transformer(wan):
    cond = condition(5, references=2)
    with Capture(wan.pipeline.transformer) as capture:
        result = wan.generate(cond)
    call = capture.calls[-1]
    # 5 frames -> 2 latent frames, plus one latent frame per reference; 48x32 padded -> 6x4 latents (VAE 8x).
    assert call["hidden_states"].shape == (1, 16, 4, 4, 6)
    control = call["control_hidden_states"]
    assert control.shape == (1, 96, 4, 4, 6)  # 16 kept + 16 generated latents, 8x8 mask sub-pixels
    mask = control[0, 32:]
    assert (mask[:, :2] == 0).all(), "reference latent frames carry a zero mask"
    # Image columns 0..19 are covered (kept: 0), 24..47 holes or padding (generated: 1); 8 pixels per latent.
    assert (mask[:, 2:, :3, :2] == 0).all()
    assert (mask[:, 2:, :, 3:] == 1).all()
    assert (mask[:, 2:, 3, :] == 1).all(), "the padded rows are generated"
    # The result: 5 frames at the requested size.
    assert len(result.frames) == 5 and result.depths is None
    assert all(frame.shape == (24, 40, 3) and frame.dtype == np.uint8 for frame in result.frames)
    assert result.info["references"] == 2 and result.info["num_frames"] == 5


@pytest.mark.parametrize(("frames", "leading", "num_frames", "latent_frames"), [(1, 0, 1, 1), (1, 1, 5, 2), (5, 0, 5, 2)])
def test_wan_frame_counts(wan, frames, leading, num_frames, latent_frames):
    with Capture(wan.pipeline.transformer) as capture:
        result = wan.generate(condition(frames, leading=leading))
    assert capture.calls[-1]["hidden_states"].shape[2] == latent_frames
    assert result.info["num_frames"] == num_frames
    assert len(result.frames) == frames


def test_wan_leading_frame_reaches_the_kept_latents(wan):
    controls = []
    for value in (30, 220):
        cond = condition(1, leading=1)
        cond = Condition(cond.poses, cond.intrinsics, cond.renders, leading_frames=(np.full((24, 40, 3), value, np.uint8),))
        with Capture(wan.pipeline.transformer) as capture:
            wan.generate(cond)
        controls.append(capture.calls[-1]["control_hidden_states"][0])
    # Latent frame 0 encodes the leading frame alone. Its "kept" latents (channels 0..15, the video where the mask
    # is black) follow the leading frame; its "generated" latents (16..31, where the mask is white) do not.
    assert not torch.allclose(controls[0][:16, 0], controls[1][:16, 0])
    torch.testing.assert_close(controls[0][16:32, 0], controls[1][16:32, 0])


def test_wan_seed_decides_the_result(wan):
    first = wan.generate(condition(1, seed=3)).frames[0]
    again = wan.generate(condition(1, seed=3)).frames[0]
    other = wan.generate(condition(1, seed=4)).frames[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_wan_rejects_bad_conditions(wan):
    with pytest.raises(InvalidInputError, match="4k\\+1"):
        wan.prepare(condition(2))
    with pytest.raises(LimitExceededError, match="1280x720"):
        wan.prepare(condition(1, width=1296, height=720))
    bad_leading = condition(1, leading=1)
    bad_leading = Condition(bad_leading.poses, bad_leading.intrinsics, bad_leading.renders, leading_frames=(np.zeros((8, 8, 3), np.uint8),))
    with pytest.raises(InvalidFrameError, match="leading frame 0"):
        wan.prepare(bad_leading)
    bad_reference = Condition(bad_leading.poses, bad_leading.intrinsics, bad_leading.renders, references=(np.zeros((8, 8), np.uint8),))
    with pytest.raises(InvalidFrameError, match="reference 0"):
        wan.prepare(bad_reference)


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"covered": "mostly"}, "covered"),
        ({"leading_frames": 2}, "leading_frames"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"max_references": -1}, "max_references"),
        ({"offload": True}, "offload"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_wan_rejects_bad_options(wan_folder, option, match):
    options = {"device": "cpu", **option}
    with pytest.raises(InvalidInputError, match=match):
        create_generator("wan-vace", model=str(wan_folder), **options)


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(NotFoundError, match="model_index.json"):
        create_generator("wan-vace", model=str(tmp_path), device="cpu")
    with pytest.raises(NotFoundError, match="no model folder"):
        create_generator("wan-vace", model=str(tmp_path / "not" / "there"), device="cpu")
    with pytest.raises(NotFoundError, match="hf download"):
        create_generator("sd-inpaint", model="worldweave-tests/no-such-model", device="cpu")


# ---------------------------------------------------------------------------------------------------------------
# sd-inpaint.


def test_sd_inpaints_holes_only_and_keeps_memory(sd):
    intrinsics = Intrinsics.from_fov(36, 20, fov_x_deg=60.0)
    renders = (half_covered(intrinsics, 0.5), half_covered(intrinsics, 1.0), half_covered(intrinsics, 0.0))
    cond = Condition(tuple(Pose.identity() for _ in renders), intrinsics, renders, prompt="a red house", seed=1)
    with Capture(sd.pipeline.unet) as capture:
        result = sd.generate(cond)
    # Only the 2 views with holes reach the UNet, in one batch, doubled for classifier-free guidance;
    # 36x20 padded -> 40x24, latents 20x12 (this tiny VAE compresses 2x); channels: 4 latents + mask + 4 masked.
    assert all(call["args"][0].shape == (4, 9, 12, 20) for call in capture.calls)
    sample = capture.calls[-1]["args"][0]
    mask = sample[2:, 4]  # the conditional half: view 0, then view 2
    assert (mask[0, :10, :9] == 0).all() and (mask[0, :, 9:] == 1).all(), "left half covered (kept), right half repainted"
    assert (mask[0, 10:] == 1).all(), "the padded rows are repainted"
    assert (mask[1] == 1).all(), "an uncovered view is repainted everywhere"
    assert result.info["inpainted_frames"] == 2
    assert all(frame.shape == (20, 36, 3) and frame.dtype == np.uint8 for frame in result.frames)
    # Memory is returned exactly where it covers; holes are filled by the model.
    np.testing.assert_array_equal(result.frames[0][renders[0].mask], renders[0].rgb[renders[0].mask])
    np.testing.assert_array_equal(result.frames[1], renders[1].rgb)
    assert not np.array_equal(result.frames[2], renders[2].rgb)


def test_sd_result_does_not_depend_on_batching(sd_folder, sd):
    cond = condition(3, covered_fraction=0.25, seed=5)
    one_at_a_time = create_generator("sd-inpaint", model=str(sd_folder), device="cpu", num_inference_steps=STEPS, batch_size=1)
    batched, single = sd.generate(cond), one_at_a_time.generate(cond)
    for a, b in zip(batched.frames, single.frames):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(batched.frames[0], batched.frames[1]), "each view has its own seed"


# ---------------------------------------------------------------------------------------------------------------
# Depth Anything.


def test_depth_anything_relative_is_disparity_and_aligns(tmp_path):
    estimator = DepthAnythingEstimator(str(save_tiny_depth_anything(tmp_path, "relative")), device="cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    prediction = estimator.estimate(rgb)
    assert prediction.kind == "disparity"
    assert prediction.values.shape == (30, 50) and prediction.values.dtype == np.float32
    assert np.isfinite(prediction.values).all()
    reference = np.full((30, 50), 3.0, np.float32)
    metres = align_depth(prediction, reference, np.ones((30, 50), bool))
    assert metres.shape == (30, 50) and np.median(metres[metres > 0]) == pytest.approx(3.0, rel=0.2)


def test_depth_anything_metric_is_metres(tmp_path):
    estimator = DepthAnythingEstimator(str(save_tiny_depth_anything(tmp_path, "metric", max_depth_m=20)), device="cpu")
    prediction = estimator.estimate(np.full((28, 42, 3), 90, np.uint8))
    assert prediction.kind == "metric"
    assert 0.0 < float(np.median(prediction.values)) < 20.0
    with pytest.raises(InvalidFrameError, match="uint8"):
        estimator.estimate(np.zeros((28, 42, 3), np.float32))
