"""``sd-inpaint``: per-frame image inpainting of each woven render's holes with a diffusers inpainting pipeline.

The cheap fallback for small GPUs: every view of a chunk is inpainted on its own, so there is no
temporal model and no chunk rule. For each view:

* ``image``: the woven render with hole pixels set to grey 128; ``mask_image``: white (255) on holes (repaint),
  black (0) on covered pixels (keep).
* Height and width are padded at the bottom and right to the pipeline's size multiple (grey image, white mask)
  and cropped back afterwards.
* The result is the render on covered pixels and the pipeline's output on holes, so what memory holds is
  returned exactly. A view without holes is the render itself and does not go through the pipeline.
* One CPU ``torch.Generator`` per view, seeded with ``seed + view index``, so a view's result does not depend on
  how views are batched.

Confidence (``GenerationResult.confidences``): memory's confidence on covered pixels (kept from memory: the
render's ``confidence`` channel, ``base.kept_confidence``), 0 on the inpainted holes.
This backend returns no depth, so the world fuses the depth estimator's depth aligned to memory and multiplies these
confidences by ``depth.depth_agreement``: how well that depth agrees with memory's (1 at the same depth, falling
linearly to 0 at a relative difference of ``depth.AGREEMENT_TOLERANCE_REL``) where both exist. A generated pixel
here always lies in a hole, where memory has no depth to compare: a guess, confidence 0, never fused.

References and leading frames are not used: an image inpainting model has no input for them (the condition's
prompt is used). Weights: a diffusers inpainting pipeline folder or model id (``AutoPipelineForInpainting``
picks the class from ``model_index.json``), e.g. ``stable-diffusion-v1-5/stable-diffusion-inpainting``.
Precision: float32 on CPU, float16 on CUDA.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import AutoPipelineForInpainting, DiffusionPipeline

from worldweave.bridge.generators.base import Condition, GenerationResult, Generator, kept_confidence
from worldweave.bridge.generators.hf_common import (
    float_to_uint8,
    load_pretrained,
    pad_image,
    padded_size,
    resolve_device,
)
from worldweave.proto.errors import InvalidInputError

HOLE_GREY = 128
"""Image value (each of R, G, B) of hole pixels and of the size padding."""
REPAINT = 255
"""Mask value on pixels the pipeline repaints."""
KEEP = 0
"""Mask value on covered pixels."""


class SdInpaintGenerator(Generator):
    """Frame-by-frame inpainting of the memory render's holes.

    Options (keyword-only after ``model``):

    * ``model``: local folder or model id of a diffusers inpainting pipeline.
    * ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` picks CUDA when present.
    * ``num_inference_steps``: denoising steps.
    * ``guidance_scale``: classifier-free guidance; values <= 1 switch it off.
    * ``negative_prompt``: text the model is steered away from ("" for none).
    * ``batch_size``: views per pipeline call (GPU memory grows with it), >= 1.
    """

    name: ClassVar[str] = "sd-inpaint"
    chunk_multiple: ClassVar[int] = 1
    chunk_offset: ClassVar[int] = 0
    max_frames: ClassVar[int] = 64
    """Views per ``generate`` call; they run ``batch_size`` at a time."""
    max_width: ClassVar[int] = 1024
    max_height: ClassVar[int] = 1024
    """Stable Diffusion 1.5/2 inpainting is trained at 512x512, SDXL inpainting at 1024x1024."""
    size_multiple: ClassVar[int] = 8
    """The VAE's 8x compression; other sizes are padded inside."""
    returns_depth: ClassVar[bool] = False

    def __init__(
        self,
        model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
        *,
        device: str | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        batch_size: int = 4,
    ) -> None:
        # 1. Check options.
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidInputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if not isinstance(negative_prompt, str):
            raise InvalidInputError(f"negative_prompt must be text, got {type(negative_prompt).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = resolve_device(device)
        self.model = model
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.batch_size = batch_size

        # 2. Load the pipeline.
        dtype = torch.float32 if self.device.type == "cpu" else torch.float16
        self.pipeline: DiffusionPipeline = load_pretrained(
            AutoPipelineForInpainting.from_pretrained, model, "model_index.json", dtype=dtype
        )
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        # Padded sizes are multiples of this many pixels: 8, or a multiple of the loaded VAE's factor if it differs.
        self.multiple = math.lcm(self.size_multiple, self.pipeline.vae_scale_factor)

    def generate(self, condition: Condition) -> GenerationResult:
        """The condition's N views with their holes inpainted (uint8, the intrinsics' size)."""
        started = time.perf_counter()
        # 1. Check inputs.
        if not self.valid_chunk(len(condition)):
            raise InvalidInputError(f"{self.name} takes 1 to {self.max_frames} views per call, got {len(condition)}")
        self.check_size(condition.intrinsics)
        height, width = condition.intrinsics.shape
        padded_height, padded_width = padded_size(height, width, self.multiple)

        # 2. Prepare images and masks of the views that have holes.
        frames = [render.rgb.copy() for render in condition.renders]
        todo = [i for i, render in enumerate(condition.renders) if not render.mask.all()]
        images = {}
        masks = {}
        for i in todo:
            render = condition.renders[i]
            image = np.where(render.mask[..., None], render.rgb, np.uint8(HOLE_GREY))
            mask = np.where(render.mask, np.uint8(KEEP), np.uint8(REPAINT))
            images[i] = PIL.Image.fromarray(pad_image(image, padded_height, padded_width, HOLE_GREY))
            masks[i] = PIL.Image.fromarray(pad_image(mask, padded_height, padded_width, REPAINT))

        # 3. Inpaint, batch_size views at a time, and keep the covered pixels of the render.
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            output = self.pipeline(
                prompt=[condition.prompt] * len(batch),
                negative_prompt=[self.negative_prompt] * len(batch),
                image=[images[i] for i in batch],
                mask_image=[masks[i] for i in batch],
                height=padded_height,
                width=padded_width,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=[torch.Generator(device="cpu").manual_seed(condition.seed + i) for i in batch],
                output_type="np",
            )
            for i, generated in zip(batch, float_to_uint8(output.images[:, :height, :width])):
                holes = ~condition.renders[i].mask
                frames[i][holes] = generated[holes]
        return GenerationResult(
            frames=tuple(frames),
            confidences=tuple(kept_confidence(render) for render in condition.renders),
            info={
                "model": self.model,
                "inpainted_frames": len(todo),
                "size": (padded_width, padded_height),
                "seconds": time.perf_counter() - started,
            },
        )
