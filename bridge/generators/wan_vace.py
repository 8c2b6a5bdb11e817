"""``wan-vace``: Wan2.1 VACE video generation through diffusers' ``WanVACEPipeline``.

How a ``Condition`` maps onto the pipeline (checked against diffusers 0.42.1's ``pipeline_wan_vace.py``):

* ``video``: the leading frames (the last frames generated before this chunk, kept for continuity), then the N
  woven renders with hole pixels set to grey 128, then the last render repeated until the frame count is 4k+1
  (holding the last pose; those frames are dropped from the result).
* ``mask``: white (255) where the model generates, black (0) where it keeps. Leading frames are black. Render
  frames are white in holes and, with ``covered="keep"``, black on covered pixels; with ``covered="guide"`` they
  are all white, so the render only guides ("soft control").
* ``reference_images``: the condition's references (retrieved anchors' source images, most relevant first), at
  most ``max_references`` of them.
* Height and width are padded at the bottom and right to multiples of 16 (grey video, white mask) and cropped
  back afterwards, so pixel (u, v) of the result is pixel (u, v) of the render.
* ``prompt``, ``negative_prompt``, ``conditioning_scale``, ``guidance_scale``, ``num_inference_steps``; a CPU
  ``torch.Generator`` seeded with the condition's seed; ``output_type="np"``; batch 1.

Confidence (``GenerationResult.confidences``): memory's confidence on pixels memory covered (the render's
``confidence`` channel, ``base.kept_confidence``), 0 on holes. With ``covered="keep"`` the
covered pixels are kept; with ``covered="guide"`` they are generated under the render's guidance. Either way this
backend returns no depth, so the world fuses the depth estimator's depth aligned to memory and multiplies these
confidences by ``depth.depth_agreement``: how well that depth agrees with memory's (1 at the same depth, falling
linearly to 0 at a relative difference of ``depth.AGREEMENT_TOLERANCE_REL``) where both exist. Where memory has no
depth to compare (the holes), the generated content's depth is a guess: confidence 0, never fused.

Weights: a folder in diffusers layout (``model_index.json``) or a model id such as
``Wan-AI/Wan2.1-VACE-1.3B-diffusers``. Precision per device: float32 on CPU; bfloat16 (text encoder and
transformer) with a float32 VAE on CUDA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import WanVACEPipeline

from worldweave.bridge.frames import check_rgb
from worldweave.bridge.generators.base import Condition, GenerationResult, Generator, kept_confidence
from worldweave.bridge.generators.hf_common import (
    float_to_uint8,
    load_pretrained,
    pad_image,
    padded_size,
    resolve_device,
)
from worldweave.proto.errors import InvalidFrameError, InvalidInputError

HOLE_GREY = 128
"""Video value (each of R, G, B) of pixels the model must invent: holes and the size padding."""
GENERATE = 255
"""Mask value where the model generates."""
KEEP = 0
"""Mask value where the model keeps the video's pixels."""
TEMPORAL_STRIDE = 4
"""Wan's VAE packs 1 frame into its first latent frame and 4 into each later one: frame counts are 4k+1."""


@dataclass(frozen=True)
class WanVaceInputs:
    """The pipeline arguments one ``Condition`` becomes (``WanVaceGenerator.prepare``).

    ``video`` and ``mask`` have ``num_frames`` images each, ``width`` x ``height`` pixels (the padded size);
    frames ``leading_frames .. leading_frames + N - 1`` are the chunk's N views.
    """

    video: list[PIL.Image.Image]
    mask: list[PIL.Image.Image]
    reference_images: list[PIL.Image.Image]
    prompt: str
    num_frames: int
    height: int
    width: int
    leading_frames: int
    """How many of the condition's leading frames open the video (kept, mask black)."""
    held_frames: int
    """How many copies of the last view close the video to reach 4k+1 frames (dropped from the result)."""


class WanVaceGenerator(Generator):
    """Wan2.1 VACE conditioned on the woven memory render, references and leading frames.

    Options (keyword-only after ``model``):

    * ``model``: local folder or model id of a diffusers ``WanVACEPipeline``.
    * ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` picks CUDA when present.
    * ``covered``: ``"keep"`` (covered pixels are kept, black mask) or ``"guide"`` (all-white mask: the render
      only guides, the model may change it).
    * ``num_inference_steps``: denoising steps (Wan's model card: 30-50).
    * ``guidance_scale``: classifier-free guidance; values <= 1 switch it off (half the compute).
    * ``conditioning_scale``: weight of the VACE control (video, mask, references), >= 0.
    * ``negative_prompt``: text the model is steered away from ("" for none).
    * ``max_references``: references used per chunk (each adds one latent frame to the sequence), >= 0.
    * ``leading_frames``: how many of the last generated frames open each chunk, 0 or 1 + 4j; the condition
      may carry fewer (the first chunk has none).
    * ``offload``: move each model component to the GPU only while it runs (needs CUDA; saves memory, costs time).
    """

    name: ClassVar[str] = "wan-vace"
    chunk_multiple: ClassVar[int] = TEMPORAL_STRIDE
    chunk_offset: ClassVar[int] = 1
    max_frames: ClassVar[int] = 81
    """Wan2.1 is trained on 81-frame clips (5 s at 16 fps)."""
    max_width: ClassVar[int] = 1280
    max_height: ClassVar[int] = 720
    """Wan2.1-VACE-14B goes to 1280x720; the 1.3B model is trained at 832x480 and is best there."""
    size_multiple: ClassVar[int] = 16
    """The VAE's 8x spatial compression times the transformer's 2x2 patches; other sizes are padded inside."""
    returns_depth: ClassVar[bool] = False

    def __init__(
        self,
        model: str = "Wan-AI/Wan2.1-VACE-1.3B-diffusers",
        *,
        device: str | None = None,
        covered: Literal["keep", "guide"] = "keep",
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        conditioning_scale: float = 1.0,
        negative_prompt: str = "",
        max_references: int = 3,
        leading_frames: int = 1,
        offload: bool = False,
    ) -> None:
        # 1. Check options.
        if covered not in ("keep", "guide"):
            raise InvalidInputError(f"covered must be 'keep' or 'guide', got {covered!r}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidInputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        for option, value in (("guidance_scale", guidance_scale), ("conditioning_scale", conditioning_scale)):
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise InvalidInputError(f"{option} must be a finite number >= 0, got {value!r}")
        if not isinstance(negative_prompt, str):
            raise InvalidInputError(f"negative_prompt must be text, got {type(negative_prompt).__name__}")
        if isinstance(max_references, bool) or not isinstance(max_references, int) or max_references < 0:
            raise InvalidInputError(f"max_references must be an integer >= 0, got {max_references!r}")
        if (
            isinstance(leading_frames, bool)
            or not isinstance(leading_frames, int)
            or leading_frames < 0
            or (leading_frames > 0 and (leading_frames - 1) % TEMPORAL_STRIDE != 0)
        ):
            raise InvalidInputError(f"leading_frames must be 0 or 1 + 4j (1, 5, 9, ...), got {leading_frames!r}")
        self.device = resolve_device(device)
        if offload and self.device.type != "cuda":
            raise InvalidInputError(f"offload moves components to a GPU while they run; device is {self.device}")
        self.model = model
        self.covered = covered
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.conditioning_scale = float(conditioning_scale)
        self.negative_prompt = negative_prompt
        self.max_references = max_references
        self.leading_frames = leading_frames

        # 2. Load the pipeline: float32 on CPU; bfloat16 with a float32 VAE on CUDA (Wan's VAE is fp32-sensitive).
        dtype = torch.float32 if self.device.type == "cpu" else {"default": torch.bfloat16, "vae": torch.float32}
        self.pipeline: WanVACEPipeline = load_pretrained(WanVACEPipeline.from_pretrained, model, "model_index.json", dtype=dtype)
        if offload:
            self.pipeline.enable_model_cpu_offload(device=self.device)
        else:
            self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)

    def prepare(self, condition: Condition) -> WanVaceInputs:
        """The pipeline inputs for ``condition`` (see the module docstring); validates the condition's images."""
        frames = len(condition)
        if not self.valid_chunk(frames):
            raise InvalidInputError(f"{self.name} takes 4k+1 frames up to {self.max_frames} per chunk, got {frames}")
        self.check_size(condition.intrinsics)
        shape = condition.intrinsics.shape
        height, width = padded_size(*shape, self.size_multiple)

        first_leading = len(condition.leading_frames) - min(self.leading_frames, len(condition.leading_frames))
        video: list[np.ndarray] = []
        mask: list[np.ndarray] = []
        for i in range(first_leading, len(condition.leading_frames)):
            video.append(check_rgb(condition.leading_frames[i], shape, name=f"leading frame {i}"))
            mask.append(np.full(shape, KEEP, np.uint8))
        leading_frames = len(video)
        for render in condition.renders:
            video.append(np.where(render.mask[..., None], render.rgb, np.uint8(HOLE_GREY)))
            if self.covered == "keep":
                mask.append(np.where(render.mask, np.uint8(KEEP), np.uint8(GENERATE)))
            else:
                mask.append(np.full(shape, GENERATE, np.uint8))
        total = len(video)
        num_frames = total + (-(total - 1)) % TEMPORAL_STRIDE
        held = num_frames - total
        video += [video[-1]] * held
        mask += [mask[-1]] * held

        references = []
        for i, reference in enumerate(condition.references[: self.max_references]):
            reference = np.asarray(reference)
            if reference.ndim != 3:
                raise InvalidFrameError(f"reference {i} must be uint8 (H, W, 3), got shape {reference.shape}")
            references.append(PIL.Image.fromarray(check_rgb(reference, reference.shape[:2], name=f"reference {i}")))
        return WanVaceInputs(
            video=[PIL.Image.fromarray(pad_image(image, height, width, HOLE_GREY)) for image in video],
            mask=[PIL.Image.fromarray(pad_image(image, height, width, GENERATE)) for image in mask],
            reference_images=references,
            prompt=condition.prompt,
            num_frames=num_frames,
            height=height,
            width=width,
            leading_frames=leading_frames,
            held_frames=held,
        )

    def generate(self, condition: Condition) -> GenerationResult:
        """Generate the condition's N frames (uint8, the intrinsics' size); see the module docstring."""
        started = time.perf_counter()
        # 1. Check inputs and prepare the conditions.
        inputs = self.prepare(condition)
        # 2. Run the pipeline (prompt encoding, VACE latents, denoising, decoding).
        output = self.pipeline(
            prompt=inputs.prompt,
            negative_prompt=self.negative_prompt,
            video=inputs.video,
            mask=inputs.mask,
            reference_images=inputs.reference_images or None,
            conditioning_scale=self.conditioning_scale,
            height=inputs.height,
            width=inputs.width,
            num_frames=inputs.num_frames,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(condition.seed),
            output_type="np",
        )
        # 3. Drop the leading and held frames and the size padding.
        height, width = condition.intrinsics.shape
        video = float_to_uint8(output.frames[0][inputs.leading_frames : inputs.leading_frames + len(condition), :height, :width])
        return GenerationResult(
            frames=tuple(np.ascontiguousarray(frame) for frame in video),
            confidences=tuple(kept_confidence(render) for render in condition.renders),
            info={
                "model": self.model,
                "num_frames": inputs.num_frames,
                "leading_frames": inputs.leading_frames,
                "held_frames": inputs.held_frames,
                "references": len(inputs.reference_images),
                "size": (inputs.width, inputs.height),
                "seconds": time.perf_counter() - started,
            },
        )
