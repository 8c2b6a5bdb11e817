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
same arguments give the same weights. With the defaults, about 4 minutes on two idle CPU cores (about 40 under heavy
load).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from worldweave.bridge.training.weaver_config import WeaverTrainConfig


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
    from worldweave.bridge.training.weaver_heldout import format_rows  # torch: only when training runs
    from worldweave.bridge.training.weaver_train import train

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
