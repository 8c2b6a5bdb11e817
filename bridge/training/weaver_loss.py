"""The learned weaver's training objective on a batch of ``SampleSet`` pixels.

Per pixel the network's softmax gives each anchor a weight and "none" the rest; the woven colour is the weighted mean
of the anchors' colours times their gains. The loss is ``(1 - w_none) * MSE(woven, true) + w_none * none_cost``
(colours in 0..1): leaving a pixel a hole costs ``none_cost``, so "none" wins only where every anchor is expected to
be worse than that. The true colour is the label only.
"""

from __future__ import annotations

import numpy as np
import torch

from worldweave.bridge.memory.weaver_net import WeaverNet
from worldweave.bridge.training.weaver_data import SampleSet


def batch_tensors(samples: SampleSet, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The tensors of pixels ``rows`` of ``samples`` (float32; colours in 0..1)."""
    view = samples.view[rows]
    return {
        "pairs": torch.from_numpy(samples.pairs[rows].astype(np.float32)),
        "present": torch.from_numpy(samples.present[rows]),
        "prior": torch.from_numpy(samples.prior[rows]),
        "colors": torch.from_numpy(samples.colors[rows].astype(np.float32) / 255.0),
        "target": torch.from_numpy(samples.target[rows].astype(np.float32) / 255.0),
        "anchors": torch.from_numpy(samples.anchors[view]),
        "log_gains": torch.from_numpy(samples.log_gains[view]),
    }


def weave_loss(net: WeaverNet, batch: dict[str, torch.Tensor], none_cost: float) -> torch.Tensor:
    """Mean loss of ``net`` on ``batch`` (see the module docstring)."""
    weights = net(batch["pairs"], batch["present"], batch["prior"])
    anchor_w = weights[:, :-1]
    kept = anchor_w.sum(dim=-1)
    gains = net.gains(batch["anchors"], batch["log_gains"])
    woven = (anchor_w.unsqueeze(-1) * gains.unsqueeze(-1) * batch["colors"]).sum(dim=1) / kept.clamp(min=1e-6).unsqueeze(-1)
    error = ((woven - batch["target"]) ** 2).mean(dim=-1)
    return (kept * error + weights[:, -1] * none_cost).mean()
