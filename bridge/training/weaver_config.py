"""The settings of a weaver training run (``worldweave train weaver``): one dataclass, each field an option.

Kept apart from the trainer so ``--help`` and argument checks import neither torch nor the data code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from worldweave.proto.errors import InvalidInputError


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class WeaverTrainConfig:
    """Every setting of a weaver training run (each field is a command-line option)."""

    out: Path = field(default=Path("weaver-run"), metadata=_help("folder for data cache, checkpoint, weights, curve"))
    rgbd: Path | None = field(default=None, metadata=_help(
        "your RGB-D folder (worldweave eval rgbd layout) to train on besides the procedural scenes"))
    rgbd_ids: str = field(default="0:195", metadata=_help(
        "A:B, the ids of the RGB-D frames used (fused and as targets); keep evaluation frames outside"))
    scenes: str = field(default="room:1,room:2,room:3,room:4,room:5,street:1", metadata=_help(
        "procedural training cases, SCENE:SEED comma-separated; '' trains on --rgbd alone"))
    heldout: str = field(default="room:101,room:102,street:101", metadata=_help(
        "procedural cases scored after training (never trained on), SCENE:SEED comma-separated; '' skips"))
    steps: int = field(default=1500, metadata=_help("optimiser steps"))
    batch: int = field(default=4096, metadata=_help("pixels per step"))
    lr: float = field(default=3e-3, metadata=_help("Adam learning rate (cosine-decayed to 5%%)"))
    hidden: int = field(default=16, metadata=_help("hidden units of the network"))
    none_cost: float = field(default=0.05, metadata=_help(
        "loss of leaving a pixel a hole (colour MSE in 0..1 units): 'none' wins where anchors are expected worse"))
    real_fraction: float = field(default=0.5, metadata=_help("share of each batch drawn from --rgbd pixels"))
    max_pixels_per_view: int = field(default=2048, metadata=_help("training pixels drawn per target view"))
    exposure_sigma: float = field(default=0.12, metadata=_help("std of the log exposure gain of fused procedural frames"))
    checkpoint_every: int = field(default=250, metadata=_help("steps between checkpoints"))
    seed: int = field(default=0, metadata=_help("seed of initialisation and batch draws"))
    threads: int = field(default=1, metadata=_help(
        "torch CPU threads while training (the network is small: one thread is fastest on a shared CPU)"))

    def __post_init__(self) -> None:
        if min(self.steps, self.batch, self.checkpoint_every, self.hidden, self.threads) < 1:
            raise InvalidInputError("steps, batch, checkpoint_every, hidden and threads must be >= 1")
        if not (self.lr > 0 and self.none_cost > 0 and 0 <= self.real_fraction <= 1):
            raise InvalidInputError(f"need lr > 0, none_cost > 0, 0 <= real_fraction <= 1; got {self.lr}, "
                                    f"{self.none_cost}, {self.real_fraction}")
        if not parse_cases(self.scenes) and self.rgbd is None:
            raise InvalidInputError("nothing to train on: --scenes is empty and no --rgbd folder is given")
        parse_cases(self.heldout)


def parse_cases(text: str) -> list[tuple[str, int]]:
    """``"room:1,street:2"`` -> ``[("room", 1), ("street", 2)]``."""
    cases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, seed = part.partition(":")
        if not seed.lstrip("-").isdigit():
            raise InvalidInputError(f"procedural case {part!r} must be SCENE:SEED, e.g. room:3")
        cases.append((name, int(seed)))
    return cases
