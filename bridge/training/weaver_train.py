"""Train the learned weaver: ``worldweave train weaver [--rgbd DATASET] [--out DIR] [options]``.

The weaver network (``bridge/memory/weaver_net.py``) learns, from anchors rendered at poses whose true frame is
known, which anchors to trust at each pixel and how far to trust each anchor's overlap-estimated exposure gain.
Training pixels (``bridge/training/weaver_data.py``) come from procedural scenes with exact ground truth (fused with
pose noise, depth noise and exposure changes) and, with ``--rgbd``, from your own RGB-D folder (the layout of
``worldweave eval rgbd``; only the frames ``--rgbd-ids`` are read, fused and used as targets: keep the frames you will
evaluate on out of that range). A tenth of the views (every tenth) is kept apart for the validation curve.

Writes into ``--out``: ``data/`` (the training pixels, cached: delete to rebuild), ``checkpoint.safetensors``
(weights, optimiser state and step, every ``--checkpoint-every`` steps; a rerun resumes from it), ``weaver.safetensors``
(the weights: point a world at them with ``WeaveOptions(mode="learned", weights=PATH)``, or
``--set weave.mode=learned --set weave.weights=PATH`` on ``worldweave eval rgbd``), ``curve.png`` (training and
validation loss), ``heldout.json`` and a printed table: heuristic vs learned on held-out procedural scenes. Seeded: the
same arguments give the same weights. About 10-25 minutes on two CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch
from tqdm import tqdm

from worldweave.bridge.eval.rgbd import RGBDDataset, parse_range
from worldweave.bridge.memory.weaver_net import WeaverNet, save_weaver
from worldweave.bridge.training.weaver_data import SampleSet, procedural_samples, rgbd_samples
from worldweave.bridge.training.weaver_heldout import format_rows, heldout_rows
from worldweave.bridge.training.weaver_loss import batch_tensors, weave_loss
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
        "procedural training cases, SCENE:SEED comma-separated"))
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
        parse_cases(self.scenes)
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


# --------------------------------------------------------------------------------------------------------- data


def _cached(path: Path, make) -> SampleSet:
    if path.is_file():
        return SampleSet(**load_numpy(str(path)))
    samples = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_numpy(samples.as_dict(), str(path))
    return samples


def build_data(config: WeaverTrainConfig) -> tuple[SampleSet, SampleSet | None]:
    """(procedural pixels, RGB-D pixels or None), built once into ``out/data/`` and read back after."""
    data = config.out / "data"
    procedural = []
    for name, seed in tqdm(parse_cases(config.scenes), desc="procedural data", unit="case"):
        procedural.append(_cached(data / f"{name}-{seed}.safetensors", lambda: procedural_samples(
            name, seed, max_pixels=config.max_pixels_per_view, exposure_sigma=config.exposure_sigma)))
    real = None
    if config.rgbd is not None:
        first, last = parse_range(config.rgbd_ids)
        path = data / f"rgbd-{first}-{last}.safetensors"
        if path.is_file():
            real = SampleSet(**load_numpy(str(path)))
        else:
            dataset = RGBDDataset.open(config.rgbd)
            parts = list(tqdm(rgbd_samples(dataset, dataset.select(first, last), max_pixels=config.max_pixels_per_view,
                                           seed=config.seed), desc="rgbd data", unit="split"))
            real = _cached(path, lambda: SampleSet.concat(parts))
    return SampleSet.concat(procedural), real


def _split(samples: SampleSet) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): every tenth view is validation."""
    val = samples.view % 10 == 0
    return np.flatnonzero(~val), np.flatnonzero(val)


# --------------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, net: WeaverNet, optimizer: torch.optim.Optimizer, step: int, history: dict) -> None:
    """Weights, Adam state and step (safetensors, no pickle); written to a temporary file, then renamed."""
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"opt.{index}.{name}"] = torch.as_tensor(value).contiguous()
    tmp = path.with_suffix(".tmp")
    save_torch(tensors, str(tmp), metadata={"step": str(step), "history": json.dumps(history)})
    tmp.replace(path)


def load_checkpoint(path: Path, net: WeaverNet, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore ``net`` and ``optimizer`` from ``path``; returns (step, history)."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state = optimizer.state_dict()
    restored: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            restored.setdefault(int(index), {})[name] = value
    state["state"] = restored
    optimizer.load_state_dict(state)
    return int(meta["step"]), json.loads(meta["history"])


def plot_curve(path: Path, history: dict) -> None:
    """Training loss (mean per logged interval) and validation loss against step, log scale."""
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
    ax.plot(history["step"], history["train"], label="train (interval mean)")
    ax.plot(history["step"], history["val"], label="validation (every 10th view)")
    if history.get("heuristic_val") is not None:
        ax.axhline(history["heuristic_val"], color="grey", linestyle="--", label="untrained (heuristic weights, overlap gains), validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (colour MSE, 0..1 units)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("learned weaver training")
    fig.tight_layout()
    fig.savefig(path)


# -------------------------------------------------------------------------------------------------------- train


def _batch_rows(rng: np.random.Generator, pools: list[tuple[np.ndarray, float]], size: int) -> list[np.ndarray]:
    return [rng.choice(rows, size=max(1, int(round(size * share)))) for rows, share in pools]


def _val_loss(net: WeaverNet, sets: list[tuple[SampleSet, np.ndarray]], none_cost: float) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for samples, rows in sets:
            for start in range(0, len(rows), 16384):
                chunk = rows[start:start + 16384]
                total += float(weave_loss(net, batch_tensors(samples, chunk), none_cost)) * len(chunk)
                count += len(chunk)
    return total / max(count, 1)


def train(config: WeaverTrainConfig, *, progress: bool = True) -> dict:
    """Run (or resume) training; returns a summary (paths, seconds, final losses, held-out rows)."""
    config.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procedural, real = build_data(config)
    data_s = time.perf_counter() - started
    sets = [(procedural, *_split(procedural), 1.0 - (config.real_fraction if real is not None else 0.0))]
    if real is not None:
        sets.append((real, *_split(real), config.real_fraction))
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = WeaverNet(hidden=config.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, config.steps) / config.steps)))
    checkpoint = config.out / "checkpoint.safetensors"
    val_sets = [(s, val) for s, _, val, _ in sets]
    history = {"step": [], "train": [], "val": [], "heuristic_val": _val_loss(net, val_sets, config.none_cost)}
    step = 0
    if checkpoint.is_file():
        step, history = load_checkpoint(checkpoint, net, optimizer)
        for _ in range(step):
            schedule.step()
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="step", disable=not progress)
    interval: list[float] = []
    train_started = time.perf_counter()
    while step < config.steps:
        rng = np.random.default_rng([config.seed, step])
        loss = 0.0
        for (samples, train_rows, _, share), rows in zip(sets, _batch_rows(rng, [(t, s) for _, t, _, s in sets],
                                                                             config.batch)):
            loss = loss + share * weave_loss(net, batch_tensors(samples, rows), config.none_cost)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        interval.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0 or step == config.steps:
            history["step"].append(step)
            history["train"].append(float(np.mean(interval)))
            history["val"].append(_val_loss(net, val_sets, config.none_cost))
            interval = []
            bar.set_postfix(train=f"{history['train'][-1]:.5f}", val=f"{history['val'][-1]:.5f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(checkpoint, net, optimizer, step, history)
    bar.close()
    train_s = time.perf_counter() - train_started
    weights = config.out / "weaver.safetensors"
    info = {"steps": config.steps, "seed": config.seed, "scenes": config.scenes,
            "rgbd_ids": config.rgbd_ids if config.rgbd is not None else None,
            "final_val": history["val"][-1] if history["val"] else None}
    save_weaver(net, weights, info)
    plot_curve(config.out / "curve.png", history)
    rows = heldout_rows(parse_cases(config.heldout), str(weights)) if config.heldout else []
    (config.out / "heldout.json").write_text(json.dumps(rows, indent=2))
    return {"weights": str(weights), "curve": str(config.out / "curve.png"), "data_seconds": round(data_s, 1),
            "train_seconds": round(train_s, 1), "history": history, "heldout": rows,
            "pixels": {"procedural": len(procedural), "rgbd": len(real) if real is not None else 0}}


# ---------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(WeaverTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float, "str": str, "Path": Path, "Path | None": Path}[str(f.type)]
        default = f.default
        parser.add_argument(flag, type=kind, default=default, help=f"{f.metadata['help']} (default: {default})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(WeaverTrainConfig)}
    config = WeaverTrainConfig(**values)
    summary = train(config, progress=not args.no_progress)
    history = summary["history"]
    print(f"data {summary['data_seconds']} s ({summary['pixels']['procedural']} procedural pixels, "
          f"{summary['pixels']['rgbd']} RGB-D pixels); training {summary['train_seconds']} s")
    print(f"validation loss: heuristic {history['heuristic_val']:.5f} -> learned {history['val'][-1]:.5f}")
    if summary["heldout"]:
        print("held-out procedural scenes (noisy, exposure-varying memory; coverage retrieval):")
        print(format_rows(summary["heldout"]))
    print(f"weights: {summary['weights']}  curve: {summary['curve']}")
    return 0
