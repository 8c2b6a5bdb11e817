"""Train the learned weaver: build the training pixels, fit the network with resumable checkpoints, plot the
curve and score held-out scenes. The command line and its help are ``bridge/training/weaver_cli.py``."""

from __future__ import annotations

import json
import time
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
from worldweave.bridge.training.weaver_config import WeaverTrainConfig, parse_cases
from worldweave.bridge.training.weaver_data import SampleSet, procedural_samples, rgbd_samples
from worldweave.bridge.training.weaver_heldout import heldout_rows
from worldweave.bridge.training.weaver_loss import batch_tensors, weave_loss
from worldweave.proto.errors import InvalidInputError


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
    return (SampleSet.concat(procedural) if procedural else SampleSet.empty()), real


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


def _training_sets(procedural: SampleSet, real: SampleSet | None, real_fraction: float
                   ) -> tuple[list[tuple[SampleSet, np.ndarray, float]], list[tuple[SampleSet, np.ndarray]]]:
    """(training sets: the pixels, their training rows and their share of each batch; validation sets: the pixels
    and their validation rows). A set with no training rows or no share draws no batch, and the others' shares are
    scaled to sum to 1."""
    pools = [(procedural, 1.0 - real_fraction if real is not None else 1.0)]
    if real is not None:
        pools.append((real, real_fraction))
    split = [(samples, *_split(samples), share) for samples, share in pools]
    training = [(samples, rows, share) for samples, rows, _, share in split if len(rows) and share > 0]
    if not training:
        raise InvalidInputError("no training pixels: the procedural scenes and RGB-D frames given (at the shares "
                                "--real-fraction sets) gave none; give more frames or scenes")
    total = sum(share for *_, share in training)
    return ([(samples, rows, share / total) for samples, rows, share in training],
            [(samples, rows) for samples, _, rows, _ in split if len(rows)])


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
    sets, val_sets = _training_sets(procedural, real, config.real_fraction)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = WeaverNet(hidden=config.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, config.steps) / config.steps)))
    checkpoint = config.out / "checkpoint.safetensors"
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
        for (samples, _, share), rows in zip(sets, _batch_rows(rng, [(t, s) for _, t, s in sets], config.batch)):
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
