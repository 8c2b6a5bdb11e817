"""Depth Anything (V1 or V2, transformers' ``AutoModelForDepthEstimation``) as the world loop's depth estimator.

Which kind of depth comes out is read from the weights' config (``depth_estimation_type``):

* ``"relative"`` weights (e.g. ``depth-anything/Depth-Anything-V2-Small-hf``) predict relative inverse depth:
  the prediction's kind is ``"disparity"``, and ``align_depth`` fits it to the memory render in inverse depth.
* ``"metric"`` weights (e.g. ``depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf``, capped at the config's
  ``max_depth`` metres) predict metres: the kind is ``"metric"``.

The image is preprocessed by the weights' own image processor (PIL backend, so results do not depend on whether
torchvision is installed) and the prediction is resized back to the image's size (bicubic).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForDepthEstimation

from worldweave.bridge.frames import check_rgb
from worldweave.bridge.generators.depth import (
    DepthEstimator,
    DepthPrediction,
    PredictionKind,
)
from worldweave.bridge.generators.hf_common import load_pretrained, resolve_device
from worldweave.proto.errors import InvalidFrameError, InvalidInputError

KINDS: dict[str, PredictionKind] = {"relative": "disparity", "metric": "metric"}
"""Depth Anything's ``depth_estimation_type`` -> the kind of ``DepthPrediction`` it produces."""


class DepthAnythingEstimator(DepthEstimator):
    """Monocular depth with Depth Anything.

    ``model``: a folder written by ``save_pretrained`` (``config.json``, weights and ``preprocessor_config.json``)
    or a model id. ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` picks CUDA when present. Runs in
    float32 (the small and base models are cheap next to a video generator).
    """

    def __init__(self, model: str = "depth-anything/Depth-Anything-V2-Small-hf", *, device: str | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model
        self.network = load_pretrained(AutoModelForDepthEstimation.from_pretrained, model, "config.json", dtype=torch.float32)
        config = self.network.config
        if config.model_type != "depth_anything":
            raise InvalidInputError(f"{model!r} is a {config.model_type!r} model; DepthAnythingEstimator needs 'depth_anything'")
        if config.depth_estimation_type not in KINDS:
            raise InvalidInputError(
                f"{model!r} has depth_estimation_type {config.depth_estimation_type!r}; expected one of {sorted(KINDS)}"
            )
        # "disparity" for relative weights, "metric" (metres) for metric ones.
        self.kind: PredictionKind = KINDS[config.depth_estimation_type]
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, model, "preprocessor_config.json", backend="pil")
        self.network.to(self.device).eval()

    def estimate(self, rgb: np.ndarray) -> DepthPrediction:
        """Depth for one uint8 (H, W, 3) image: float32 (H, W) values of kind ``self.kind``."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3:
            raise InvalidFrameError(f"rgb must be uint8 (H, W, 3), got shape {rgb.shape}")
        rgb = check_rgb(rgb, rgb.shape[:2])
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.network(**inputs)
        depth = self.processor.post_process_depth_estimation(outputs, target_sizes=[rgb.shape[:2]])[0]["predicted_depth"]
        return DepthPrediction(values=depth.reshape(rgb.shape[:2]).float().cpu().numpy(), kind=self.kind)
