"""Plumbing shared by the Hugging Face backends (diffusers pipelines, transformers depth): where weights come
from, which device runs them, and padding images to a size multiple and back.

Weights load from a **local folder first** (the layout ``save_pretrained`` writes); anything else is taken as a
model id (``owner/name``) and resolved by the Hugging Face cache, which works offline (``HF_HUB_OFFLINE=1``) once
the model has been downloaded. Failures raise ``NotFoundError`` saying what to do next.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from worldweave.proto.errors import InvalidInputError, NotFoundError

T = TypeVar("T")

MODEL_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?")
"""What a Hugging Face model id looks like (``name`` or ``owner/name``); anything else must be a folder."""


def resolve_device(device: str | None) -> torch.device:
    """The torch device to run on: ``device`` as given (``"cpu"``, ``"cuda"``, ``"cuda:1"``), or CUDA when it is
    available and CPU otherwise when ``None``. Raises ``InvalidInputError`` for a malformed name or a CUDA device
    this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise InvalidInputError(f"unknown device {device!r}: {error}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r} asked for, but torch sees no CUDA device on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA devices exist")
    elif resolved.type != "cpu":
        raise InvalidInputError(f"device {device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def load_pretrained(loader: Callable[..., T], model: str, marker: str, **kwargs: object) -> T:
    """Call ``loader(source, **kwargs)`` (a ``from_pretrained``) on a local folder or a model id.

    ``model``: a folder written by ``save_pretrained`` (checked to contain ``marker``, e.g. ``model_index.json``
    for a diffusers pipeline, ``config.json`` for a transformers model), or a model id found in the Hugging Face
    cache or downloaded. Raises ``NotFoundError`` naming the folder or id and how to get the weights.
    """
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"model must be a folder path or a model id, got {model!r}")
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / marker).is_file():
            raise NotFoundError(f"model folder {str(folder)!r} has no {marker}; it is not a save_pretrained folder of this kind")
        return loader(str(folder), **kwargs)
    if not MODEL_ID.fullmatch(model):
        raise NotFoundError(f"no model folder at {model!r} (and it is not a model id of the form 'owner/name')")
    try:
        return loader(model, **kwargs)
    except OSError as error:
        raise NotFoundError(
            f"model {model!r} is not a local folder, and loading it as a model id failed: it is not in the Hugging Face "
            f"cache (offline) or could not be downloaded. Download it once with `hf download {model} --local-dir DIR` "
            f"and pass DIR. Cause: {error}"
        ) from error


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``multiple`` pixels."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_image(image: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """``image`` (H, W) or (H, W, C) padded at the bottom and right to (height, width) with the value ``fill``.

    Padding at the far edges keeps pixel (u, v) where it was, so cropping ``[:H, :W]`` undoes it exactly.
    """
    pad = [(0, height - image.shape[0]), (0, width - image.shape[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="constant", constant_values=fill)


def float_to_uint8(images: np.ndarray) -> np.ndarray:
    """Images with values in [0, 1] (a pipeline's ``output_type="np"``) to uint8 RGB, rounded and clipped."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
