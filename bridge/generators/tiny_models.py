"""Tiny random-weight models for the diffusers backends and Depth Anything, built in code (no download).

For tests and smoke runs on machines without weights or a GPU: each ``save_tiny_*`` function builds a model with
random weights at a few thousand parameters, writes it with ``save_pretrained`` to a folder, and returns the
folder, which the backend then loads through the same path a user's weights take
(``create_generator("wan-vace", model=str(folder))``, ``DepthAnythingEstimator(str(folder))``,
``worldweave serve --generator-option model=FOLDER``). The outputs are noise; only shapes and plumbing are
meaningful. A run is deterministic: each builder seeds torch with 0 first.

Sizes: the Wan VACE pipeline runs a 5-frame 64x64 chunk in about 0.1 s on a CPU with 2 steps; the Depth Anything
model predicts a 28x28 image (resized back to the input's size) in about 10 ms.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTImageProcessorPil,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from worldweave.proto.errors import InvalidInputError


def tiny_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """A character-level tokenizer (lower-case letters and space) built in memory; ``max_length`` tokens."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({c: 3 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ")})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def save_tiny_wan_vace(folder: str | Path) -> Path:
    """A tiny ``WanVACEPipeline`` (UMT5 text encoder, Wan VAE, VACE transformer with control blocks on layers 0
    and 2, flow-matching scheduler) saved to ``folder`` in diffusers layout; returns the folder."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(512)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )
    pipeline = WanVACEPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )
    pipeline.save_pretrained(folder)
    return Path(folder)


def save_tiny_sd_inpaint(folder: str | Path) -> Path:
    """A tiny ``StableDiffusionInpaintPipeline`` (CLIP text encoder, 9-channel UNet, a VAE that compresses 2x,
    PNDM scheduler, no safety checker) saved to ``folder`` in diffusers layout; returns the folder."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=16, pad_token_id=0, bos_token_id=0, eos_token_id=1, projection_dim=32,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=16,
    )
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return Path(folder)


def save_tiny_depth_anything(folder: str | Path, kind: str = "relative", max_depth_m: int = 20) -> Path:
    """A tiny Depth Anything (DINOv2 backbone, 28x28 input) and its PIL image processor saved to ``folder``.

    ``kind``: ``"relative"`` (predicts disparity) or ``"metric"`` (predicts metres up to ``max_depth_m``;
    transformers' config takes whole metres).
    Returns the folder.
    """
    if kind not in ("relative", "metric"):
        raise InvalidInputError(f"kind must be 'relative' or 'metric', got {kind!r}")
    torch.manual_seed(0)
    backbone = Dinov2Config(
        image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, patch_size=14, neck_hidden_sizes=[8, 16, 16, 16],
        fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type=kind, max_depth=max_depth_m,
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return Path(folder)
